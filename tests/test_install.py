"""Install and uninstall into a throwaway root (files, owners, modes, idempotence, data kept),
the unit checked by ``systemd-analyze verify`` against the installed tree, and its offline
security exposure."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import EVPAY, REPO, subprocess_env

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or shutil.which("systemd-sysusers") is None,
    reason="systemd-analyze / systemd-sysusers absent (the README's test command installs systemd)",
)


def evpay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVPAY, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )


def ids(root: Path, table: str) -> dict[str, int]:
    return {
        f[0]: int(f[2])
        for f in (line.split(":") for line in (root / "etc" / table).read_text().splitlines())
    }


@needs_systemd
def test_install_is_complete_idempotent_and_uninstall_keeps_the_data(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = evpay("install", "--root", str(root), "--skip-venv")
    assert first.returncode == 0, first.stderr
    users, groups = ids(root, "passwd"), ids(root, "group")
    assert (
        "evpay" in users
        and "evpay" in (root / "etc/group").read_text().split("dialout:")[1].split("\n")[0]
    )
    expected = {
        "etc/systemd/system/evpay.service": (0o644, 0, 0),
        "usr/lib/sysusers.d/evpay.conf": (0o644, 0, 0),
        "usr/lib/tmpfiles.d/evpay.conf": (0o644, 0, 0),
        "etc/udev/rules.d/90-evpay.rules": (0o644, 0, 0),
        "etc/evpay/gateway.toml": (0o640, 0, groups["evpay"]),
        "etc/evpay": (0o750, 0, groups["evpay"]),
        "etc/evpay/credentials": (0o700, 0, 0),
        "var/lib/evpay": (0o750, users["evpay"], groups["evpay"]),
        "var/log/evpay": (0o750, users["evpay"], groups["evpay"]),
    }
    for rel, (mode, uid, gid) in expected.items():
        st = (root / rel).stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (mode, uid, gid), rel
    broker_is_locked(root)
    assert (root / "etc/systemd/system/multi-user.target.wants/evpay.service").is_symlink()
    rules = (root / "etc/udev/rules.d/90-evpay.rules").read_text()
    assert (
        'ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001"' in rules
        and 'SYMLINK+="evpay/ftdi-ft232r-' in rules
    )

    (root / "etc/evpay/gateway.toml").write_text("# the technician's config\n")
    again = evpay("install", "--root", str(root), "--skip-venv")
    assert again.returncode == 0 and "wrote" not in again.stdout  # nothing changed the second time
    assert (
        "kept" in again.stdout
        and (root / "etc/evpay/gateway.toml").read_text() == "# the technician's config\n"
    )

    (root / "var/lib/evpay/evpay.sqlite3").write_bytes(b"data")
    gone = evpay("uninstall", "--root", str(root))
    assert gone.returncode == 0 and not (root / "etc/systemd/system/evpay.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/evpay.service").exists()
    assert (root / "var/lib/evpay/evpay.sqlite3").exists() and (
        root / "etc/evpay/gateway.toml"
    ).exists()
    assert evpay("uninstall", "--root", str(root), "--purge").returncode == 0
    assert not (root / "var/lib/evpay").exists() and not (root / "etc/evpay").exists()
    assert not (root / "etc/mosquitto/evpay.passwd").exists()


def broker_is_locked(root: Path) -> None:
    """Issue 27: the broker install sets up takes no anonymous client and has the ACL; its
    passwords are credentials only root reads; the gateway's config uses them."""
    conf = (root / "etc/mosquitto/conf.d/evpay.conf").read_text()
    assert "allow_anonymous false" in conf and "acl_file /etc/mosquitto/evpay.acl" in conf
    assert "password_file /etc/mosquitto/evpay.passwd" in conf
    assert "listener 1883 127.0.0.1\nuse_username_as_clientid true" in conf
    assert "#listener 8883" in conf and "#certfile" in conf  # TLS beyond loopback, documented
    users = (root / "etc/mosquitto/evpay.passwd").read_text().splitlines()
    assert [u.split(":")[0] for u in users] == ["evpay-gateway", "evpay-doctor"]
    assert all(":$7$101$" in u for u in users)  # mosquitto's PBKDF2-SHA512, never clear text
    assert (
        "pattern write evpay/v1/charger/%u/evse/+/plugged"
        in (root / "etc/mosquitto/evpay.acl").read_text()
    )
    for name in ("mqtt-password", "mqtt-doctor-password"):
        st = (root / "etc/evpay/credentials" / name).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0)
    config = (root / "etc/evpay/gateway.toml").read_text()
    assert 'password = { credential = "mqtt-password" }' in config


@needs_systemd
def test_the_installed_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` needs the ExecStart binary: the unit is checked with its paths
    pointing into the installed tree (a stand-in for the venv's evpay)."""
    root = tmp_path / "root"
    assert evpay("install", "--root", str(root), "--skip-venv", "--no-enable").returncode == 0
    binary = root / "opt/evpay-edge/bin/evpay"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    unit = (
        (root / "etc/systemd/system/evpay.service")
        .read_text()
        .replace("/opt/evpay-edge", str(root / "opt/evpay-edge"))
    )
    (tmp_path / "evpay.service").write_text(unit)
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "evpay.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr


@needs_systemd
def test_the_units_offline_exposure_is_at_most_2() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(REPO / "systemd/evpay.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(
        r"Overall exposure level for evpay.service: ([0-9.]+)", out.stdout + out.stderr
    )
    assert found is not None, out.stdout + out.stderr
    assert float(found.group(1)) <= 2.0
