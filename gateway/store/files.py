"""The modes of the files that hold money records: the database (and its WAL and SHM, which
SQLite creates with the database's mode), journal exports and archives.

They hold sessions, masked card data and encrypted tokens: 0600 whatever the umask (a default
umask made them 0644, world-readable), or 0640 for a group the operator names ([storage]
group, e.g. an auditors' group). A file is written only at the path given, never through a
symlink there (someone who can write the directory must not redirect an export).
"""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

from gateway.errors import BadInput, StoreError

PRIVATE = 0o600
GROUP_READ = 0o640


def mode_for(group: str | None) -> int:
    return PRIVATE if group is None else GROUP_READ


def _gid(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise StoreError(f"[storage] group {group!r}: no such group on this system") from None


def _settle(fd: int, group: str | None) -> None:
    """The mode (and group) the file must have, set on the open descriptor (no race)."""
    if group is not None:
        os.fchown(fd, -1, _gid(group))
    os.fchmod(fd, mode_for(group))


def write_private(
    path: Path, data: bytes, group: str | None = None, *, exclusive: bool = False
) -> None:
    """Write ``data`` to ``path`` (created or replaced) with mode 0600 (0640 with ``group``);
    BadInput when ``path`` is a symlink or not a regular file. ``exclusive``: the file must not
    exist yet (O_EXCL): it is ours from its creation, with its mode, and nobody else's open."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if exclusive:
        flags |= os.O_EXCL
    try:
        fd = os.open(path, flags, mode_for(group))
    except OSError as exc:
        if path.is_symlink():
            raise BadInput(f"{path}: is a symlink; refusing to write through it") from None
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadInput(f"{path}: not a regular file; refusing to write to it")
        _settle(fd, group)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def create_database_file(path: Path, group: str | None = None) -> None:
    """Create the (empty) database file with its mode before SQLite opens it, so that it never
    exists with the umask's mode; SQLite gives the WAL and SHM the same mode. An existing file
    (an older version's, a copy) and its WAL and SHM are tightened to that mode: else SQLite
    would create every new WAL and SHM with the old, wider one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE)
    except FileExistsError:
        for each in database_files(path)[:3]:
            tighten(each, group)
        return
    try:
        _settle(fd, group)
    finally:
        os.close(fd)


def tighten(path: Path, group: str | None = None) -> None:
    """Narrow an existing regular file's mode to what it must be (never through a symlink); a
    file we may not change is left to ``evpay doctor``, which flags it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # missing, a symlink, unreadable
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode_for(group):
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & mode_for(group))
    except OSError:
        pass  # not ours to change
    finally:
        os.close(fd)


def too_open(path: Path, group: str | None = None) -> str | None:
    """Why the file's mode is wider than it must be, or None (also when it does not exist)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    allowed = mode_for(group)
    if mode & ~allowed:
        return f"{path}: mode {mode:04o}, wider than {allowed:04o}; chmod {allowed:o} {path}"
    return None


def database_files(path: Path) -> list[Path]:
    """The database and the files SQLite and the daemon keep beside it."""
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", ".lock"))]
