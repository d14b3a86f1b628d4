"""Who may read the money records on disk (issue 27): the database, its WAL and SHM, and journal
exports are 0600 whatever the umask (0640 for a named group), an export never follows a
symlink, and ``evpay doctor`` fails a database file readable by others."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.doctor_cmd import run_checks
from gateway.store import JournalEntry, Step, Store
from gateway.store.journal import load_signing_key, new_signing_key, public_key_hex
from tests.helpers import EVPAY, subprocess_env


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The default umask of many systems: files 0644 unless the code says otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _database(path: Path, group: str | None = None) -> Store:
    store = Store.open(path, group=group)
    store.apply(Step("s1", journal=[JournalEntry("test", "x", "test.made", {"n": 1})]))
    return store


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "evpay.toml"
    config.write_text(
        f'[site]\nid = "S"\ncountry = "DE"\n[storage]\npath = "evpay.sqlite3"\n{extra}', "utf-8"
    )
    return config


def _evpay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVPAY, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),
    )


@pytest.mark.usefixtures("open_umask")
def test_the_database_its_wal_and_shm_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "evpay.sqlite3"
    store = _database(db)
    try:
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert path.exists() and _mode(path) == 0o600, path
    finally:
        store.close()


@pytest.mark.usefixtures("open_umask")
def test_a_named_group_reads_the_database_0640(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    db = tmp_path / "evpay.sqlite3"
    store = _database(db, group=group)
    try:
        assert _mode(db) == 0o640 and db.stat().st_gid == os.getgid()
        assert _mode(db.with_name(db.name + "-wal")) == 0o640
    finally:
        store.close()


def test_journal_export_is_0600_and_never_follows_a_symlink(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _database(tmp_path / "evpay.sqlite3").close()
    out = tmp_path / "export.json"
    done = _evpay(
        "journal", "export", "--from", "2020-01-01", "--out", str(out), "--config", str(config)
    )
    assert done.returncode == 0, done.stderr
    assert _mode(out) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("keep me", "utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    refused = _evpay(
        "journal", "export", "--from", "2020-01-01", "--out", str(link), "--config", str(config)
    )
    assert refused.returncode == 2 and "symlink" in refused.stderr
    assert victim.read_text("utf-8") == "keep me"


def test_doctor_fails_a_database_readable_by_others(tmp_path: Path) -> None:
    config = _config(tmp_path)
    db = tmp_path / "evpay.sqlite3"
    _database(db).close()
    checks = {c.name: c for c in run_checks(config)}
    assert checks["file modes"].status == "pass"
    db.chmod(0o644)
    checks = {c.name: c for c in run_checks(config)}
    assert checks["file modes"].status == "fail" and "0644" in checks["file modes"].detail


def test_a_mistyped_public_key_is_a_wrong_key_not_tampering(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = _database(tmp_path / "evpay.sqlite3")
    key = load_signing_key(new_signing_key(), "test")
    store.sign_journal(key)
    store.close()
    right = public_key_hex(key)
    assert (
        _evpay("journal", "verify", "--public-key", right, "--config", str(config)).returncode == 0
    )
    other = public_key_hex(load_signing_key(new_signing_key(), "test"))
    for given in (other, right[:-1], right + "00"):
        result = _evpay("journal", "verify", "--public-key", given, "--config", str(config))
        assert result.returncode == 2, result.stdout
        assert "TAMPERED" not in result.stdout
        assert "wrong key" in result.stderr or "not an Ed25519 public key" in result.stderr


def test_a_read_only_database_directory_at_start_is_one_line_exit_74(tmp_path: Path) -> None:
    """A directory the daemon may not write (as root, whom modes do not stop: sysfs's root,
    where nobody may create a file)."""
    readonly = tmp_path / "ro"
    readonly.mkdir()
    where = Path("/sys") if os.geteuid() == 0 else readonly
    config = tmp_path / "evpay.toml"
    config.write_text(
        f'[site]\nid = "S"\ncountry = "DE"\n[storage]\npath = "{where}/evpay.sqlite3"\n', "utf-8"
    )
    readonly.chmod(0o555)
    try:
        result = _evpay("run", "--config", str(config))
    finally:
        readonly.chmod(0o755)
    assert result.returncode == 74, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "cannot use the database directory" in result.stderr
