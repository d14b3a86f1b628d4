"""``evpay install [--root DIR]`` and ``evpay uninstall [--root DIR] [--purge]``.

One idempotent install: the package into its own venv under /opt/evpay-edge, the systemd unit,
the sysusers.d and tmpfiles.d files (the service user and its directories, created at once
with ``systemd-sysusers``/``systemd-tmpfiles``), the udev rules (from
drivers/transport/usb_ids.py), a config template that is never overwritten, the site broker's
access rules (a mosquitto conf.d file, its password file with the gateway's and the doctor's
users, the ACL; the two passwords as credentials; written once, never overwritten:
firmware_bridge/broker.py says why), and the unit enabled. ``--root`` installs into another
tree (an image, a test). Uninstall keeps the config, the secrets, the broker's files and the
database unless ``--purge``.
"""

from __future__ import annotations

import argparse
import grp
import os
import secrets
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from gateway import __version__
from gateway.errors import GatewayError

PREFIX = "opt/evpay-edge"
UNIT = "etc/systemd/system/evpay.service"
SYSUSERS = "usr/lib/sysusers.d/evpay.conf"
TMPFILES = "usr/lib/tmpfiles.d/evpay.conf"
UDEV = "etc/udev/rules.d/90-evpay.rules"
CONFIG = "etc/evpay/gateway.toml"
MOSQUITTO_CONF = "etc/mosquitto/conf.d/evpay.conf"
MOSQUITTO_PASSWD = "etc/mosquitto/evpay.passwd"  # noqa: S105 - a path
MOSQUITTO_ACL = "etc/mosquitto/evpay.acl"
CREDENTIALS = "etc/evpay/credentials"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    install = commands.add_parser(
        "install", help="install the service (venv, unit, user, udev rules, config template)"
    )
    install.add_argument("--root", type=Path, default=Path("/"))
    install.add_argument(
        "--from", dest="source", help="what pip installs (default: this checkout, or this version)"
    )
    install.add_argument(
        "--skip-venv",
        action="store_true",
        help="files only (images and tests: the venv is made apart)",
    )
    install.add_argument("--no-enable", action="store_true")
    install.set_defaults(handler=_install)
    uninstall = commands.add_parser(
        "uninstall", help="remove the service; the config and data stay unless --purge"
    )
    uninstall.add_argument("--root", type=Path, default=Path("/"))
    uninstall.add_argument(
        "--purge", action="store_true", help="also remove /etc/evpay and /var/lib/evpay"
    )
    uninstall.set_defaults(handler=_uninstall)


def asset(name: str) -> str:
    """A file shipped with the package (the wheel's gateway/deploy/), or the checkout's."""
    packaged = resources.files("gateway").joinpath("deploy", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise GatewayError(f"{name} is missing from this installation of evpay (a packaging bug)")


def _install(args: argparse.Namespace) -> int:
    from drivers.transport.usb_ids import udev_rules

    root: Path = args.root
    if os.geteuid() != 0:
        raise GatewayError(
            "evpay install must run as root (it creates a system user and writes /etc)"
        )
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if not args.skip_venv:
        _venv(root, args.source)
    changes = [
        _write(root / UNIT, asset("systemd/evpay.service"), 0o644),
        _write(root / SYSUSERS, asset("systemd/evpay.sysusers"), 0o644),
        _write(root / TMPFILES, asset("systemd/evpay.tmpfiles"), 0o644),
        _write(root / UDEV, udev_rules(), 0o644),
        _write(root / PREFIX / "share/README.md", asset("README.md"), 0o644),
        _write(root / PREFIX / "share/alerts.yml", asset("config/alerts.yml"), 0o644),
    ]
    _run(["systemd-sysusers", f"--root={root}", str(root / SYSUSERS)])
    _run(["systemd-tmpfiles", f"--root={root}", "--create", str(root / TMPFILES)])
    config = root / CONFIG
    if config.exists():
        changes.append(f"kept {config} (never overwritten)")
    else:
        changes.append(_write(config, asset("config/gateway.example.toml"), 0o640))
        os.chown(config, 0, _gid(root, "evpay") or 0)
    changes += _broker(root)
    if not args.no_enable:
        _run(["systemctl", f"--root={root}", "enable", "evpay.service"])
        changes.append("enabled evpay.service")
    for line in changes:
        print(line)
    print(
        f"next: edit {root / CONFIG}, secrets in {root / 'etc/evpay/credentials'}/ (mode 0600), "
        f"run "
        "`evpay config validate`, `systemctl daemon-reload; systemctl start evpay`, `evpay doctor`"
    )
    return 0


def _broker(root: Path) -> list[str]:
    """The site broker as issue 27 requires: no anonymous client, a user per client, the ACL,
    client id = user name; plain MQTT on loopback only (the TLS listener for chargers on the
    network is written commented out: it needs the site's certificate). Written once: the
    operator adds each charger's user to the password file (mosquitto_passwd)."""
    from firmware_bridge import broker

    passwd = root / MOSQUITTO_PASSWD
    if passwd.exists():
        return [f"kept {passwd} and the broker's ACL (never overwritten)"]
    users = {broker.GATEWAY_USER: secrets.token_urlsafe(24)}
    users[broker.DOCTOR_USER] = secrets.token_urlsafe(24)
    group = _gid(root, "mosquitto", missing_ok=True)
    readable = 0o640 if group is not None else 0o600
    changes = [
        _write(root / CREDENTIALS / "mqtt-password", users[broker.GATEWAY_USER] + "\n", 0o600),
        _write(root / CREDENTIALS / "mqtt-doctor-password", users[broker.DOCTOR_USER], 0o600),
        _write(passwd, broker.password_file(users), readable),
        _write(root / MOSQUITTO_ACL, broker.acl(), readable),
    ]
    for path in (passwd, root / MOSQUITTO_ACL):
        os.chown(path, 0, group or 0)  # mosquitto reads them after dropping to its own user
    conf = broker.mosquitto_conf(
        port=1883, password_path=f"/{MOSQUITTO_PASSWD}", acl_path=f"/{MOSQUITTO_ACL}"
    )
    changes.append(_write(root / MOSQUITTO_CONF, conf + broker.TLS_EXAMPLE, 0o644))
    if group is None:
        changes.append(
            f"mosquitto is not installed in {root}: after installing it, "
            f"chown root:mosquitto {passwd} {root / MOSQUITTO_ACL} and chmod 0640 them"
        )
    return changes


def _uninstall(args: argparse.Namespace) -> int:
    root: Path = args.root
    if (root / UNIT).exists():
        _run(["systemctl", f"--root={root}", "disable", "evpay.service"], check=False)
    for rel in (UNIT, SYSUSERS, TMPFILES, UDEV):
        (root / rel).unlink(missing_ok=True)
    shutil.rmtree(root / PREFIX, ignore_errors=True)
    kept = [root / "etc/evpay", root / "var/lib/evpay"]
    if args.purge:
        for path in (*kept, root / "var/log/evpay"):
            shutil.rmtree(path, ignore_errors=True)
        for rel in (MOSQUITTO_CONF, MOSQUITTO_PASSWD, MOSQUITTO_ACL):
            (root / rel).unlink(missing_ok=True)
        print("removed evpay, its config, secrets, database and logs")
    else:
        print(f"removed evpay; kept {', '.join(str(p) for p in kept)} (--purge removes them)")
    return 0


def _venv(root: Path, source: str | None) -> None:
    target = root / PREFIX
    checkout = Path(__file__).resolve().parents[2]
    what = source or (
        str(checkout) if (checkout / "pyproject.toml").is_file() else f"evpay-edge=={__version__}"
    )
    _run([sys.executable, "-m", "venv", str(target)])
    _run([str(target / "bin/pip"), "install", "--quiet", "--upgrade", what])


def _write(path: Path, text: str, mode: int) -> str:
    from gateway.store.files import write_private

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        path.chmod(mode)
        return f"unchanged {path}"
    if mode & 0o077 == 0:  # a secret: 0600 from its creation (O_EXCL|O_NOFOLLOW), no window
        path.unlink(missing_ok=True)
        write_private(path, text.encode(), exclusive=True)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return f"wrote {path}"


def _gid(root: Path, group: str, *, missing_ok: bool = False) -> int | None:
    if root == Path("/"):
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            if missing_ok:
                return None
            raise
    table = root / "etc/group"
    lines = table.read_text(encoding="utf-8").splitlines() if table.is_file() else []
    for line in lines:
        name, _, gid, *_ = line.split(":")
        if name == group:
            return int(gid)
    if missing_ok:
        return None
    raise GatewayError(f"group {group} was not created in {root}: systemd-sysusers failed")


def _run(command: list[str], *, check: bool = True) -> None:
    if shutil.which(command[0]) is None and not Path(command[0]).is_file():
        raise GatewayError(f"{command[0]} is needed to install (apt-get install systemd)")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise GatewayError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()}")
