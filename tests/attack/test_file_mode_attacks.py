"""Attacks on the modes of the files that hold money records (issue 27): an older version's
0644 database, the lock file, the retention archives."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import JournalEntry, Step, Store, retention


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_an_older_0644_database_gets_no_world_readable_wal(tmp_path: Path) -> None:
    db = tmp_path / "evpay.sqlite3"
    Store.open(db).close()
    db.chmod(0o644)  # as an older version (or a copy with cp) left it
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    store = Store.open(db)
    try:
        store.apply(Step("s1", journal=[JournalEntry("test", "x", "test.made", {"n": 1})]))
        wal = db.with_name(db.name + "-wal")
        assert wal.exists()
        assert _mode(wal) == 0o600 and _mode(db) == 0o600, (oct(_mode(db)), oct(_mode(wal)))
    finally:
        store.close()


@pytest.mark.usefixtures("open_umask")
def test_the_lock_file_is_0600(tmp_path: Path) -> None:
    from gateway.store.lock import DatabaseLock

    lock = DatabaseLock(tmp_path / "evpay.sqlite3")
    lock.acquire()
    try:
        locks = list(tmp_path.glob("*lock*"))
        assert locks and all(_mode(p) & 0o077 == 0 for p in locks), [oct(_mode(p)) for p in locks]
    finally:
        lock.release()


@pytest.mark.usefixtures("open_umask")
def test_an_archive_is_never_world_readable_even_for_an_instant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = os.fchmod

    def spy(fd: int, mode: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real(fd, mode)

    monkeypatch.setattr(os, "fchmod", spy)
    retention._write_durably(tmp_path / "journal-000000000001-000000000009.json", b"{}")
    assert seen and all(m & 0o077 == 0 for m in seen), [oct(m) for m in seen]


def test_an_archive_is_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me", "utf-8")
    archive = tmp_path / "archive"
    archive.mkdir()
    path = archive / "journal-000000000001-000000000009.json"
    path.with_suffix(".tmp").symlink_to(victim)
    with contextlib.suppress(OSError):
        retention._write_durably(path, b'{"money": 1}')
    assert victim.read_text("utf-8") == "keep me"


@pytest.mark.usefixtures("open_umask")
def test_install_never_has_a_broker_password_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli import install_cmd

    seen: dict[str, int] = {}
    real = Path.chmod

    def spy(self: Path, mode: int, **kw: object) -> None:
        if self.exists() and "password" in self.name:
            seen[self.name] = _mode(self)
        real(self, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "chmod", spy)
    install_cmd._broker(tmp_path)
    assert seen, "no password file written"
    assert all(m & 0o077 == 0 for m in seen.values()), {k: oct(v) for k, v in seen.items()}
