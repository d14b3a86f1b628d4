"""A power-cut emulator for SQLite, in the manner of SQLite's own crash tests (``test6.c``).

A SIGKILL loses nothing the process had handed to the kernel; a power cut loses, or tears,
whatever the disk had not been told to make durable. This module shims SQLite's default VFS
through ``ctypes`` (the same ``libsqlite3`` the ``sqlite3`` module is linked to) so that every
write and truncate of a database, WAL or rollback journal is logged, with the bytes it
overwrote, until the next ``xSync`` of that file makes it durable (the log is then emptied).
The daemon runs under it (``python -m tests.campaigns.powercut_vfs LOGDIR run --config ...``);
after it is killed, :func:`power_cut` rewinds each file to its last sync and then lets a random
part of the unsynced writes reach the "disk": none, a prefix, a random subset, or a prefix
whose last write is torn (each 512-byte sector new, old or garbage).

What it covers: lost, reordered and torn writes to the SQLite files after their last fsync,
and the shared-memory index lost (SQLite rebuilds it). What it does not: a disk that lies
about fsync, damage outside the bytes written (SQLite assumes powersafe overwrite), directory
entries (a file created or deleted just before the cut is taken as durable), and files
written outside SQLite (logs, the clean-stop marker).
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import sqlite3
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

SQLITE_OK, SQLITE_IOERR = 0, 10
_TRACKED = 0x00000100 | 0x00000800 | 0x00080000  # SQLITE_OPEN_MAIN_DB | MAIN_JOURNAL | WAL
_SECTOR = 512
_HEAD = struct.Struct("<cqqII")  # kind (w/t), offset, size before, len(old), len(new)

_VFS_FIELDS = (
    "xOpen",
    "xDelete",
    "xAccess",
    "xFullPathname",
    "xDlOpen",
    "xDlError",
    "xDlSym",
    "xDlClose",
    "xRandomness",
    "xSleep",
    "xCurrentTime",
    "xGetLastError",
    "xCurrentTimeInt64",
    "xSetSystemCall",
    "xGetSystemCall",
    "xNextSystemCall",
)
_IO_FIELDS = (
    "xClose",
    "xRead",
    "xWrite",
    "xTruncate",
    "xSync",
    "xFileSize",
    "xLock",
    "xUnlock",
    "xCheckReservedLock",
    "xFileControl",
    "xSectorSize",
    "xDeviceCharacteristics",
    "xShmMap",
    "xShmLock",
    "xShmBarrier",
    "xShmUnmap",
    "xFetch",
    "xUnfetch",
)


class _Vfs(ctypes.Structure):
    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("szOsFile", ctypes.c_int),
        ("mxPathname", ctypes.c_int),
        ("pNext", ctypes.c_void_p),
        ("zName", ctypes.c_char_p),
        ("pAppData", ctypes.c_void_p),
        *((name, ctypes.c_void_p) for name in _VFS_FIELDS),
    ]


class _IoMethods(ctypes.Structure):
    _fields_ = [("iVersion", ctypes.c_int), *((name, ctypes.c_void_p) for name in _IO_FIELDS)]


_X_OPEN = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
)
_X_DELETE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
_X_CLOSE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_X_WRITE = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
)
_X_TRUNCATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int64)
_X_SYNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)


def log_path(log_dir: Path, path: str) -> Path:
    return log_dir / (Path(path).name + ".unsynced")


@dataclass
class _Open:
    path: str
    real: _IoMethods
    reader: int  # our own descriptor, to read what a write overwrites


class PowerCutVfs:
    """The shim, registered as the process's default VFS: every connection goes through it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.lib = ctypes.CDLL("libsqlite3.so.0")
        self.lib.sqlite3_vfs_find.restype = ctypes.c_void_p
        self.lib.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
        self.lib.sqlite3_vfs_register.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.real_ptr = self.lib.sqlite3_vfs_find(None)
        self.real = _Vfs.from_address(self.real_ptr)
        self.vfs = _Vfs()
        ctypes.memmove(ctypes.addressof(self.vfs), self.real_ptr, ctypes.sizeof(_Vfs))
        self.name = ctypes.c_char_p(b"powercut")
        self.vfs.zName, self.vfs.pNext = self.name.value, None
        self._callbacks = {
            "xOpen": _X_OPEN(self._open),
            "xDelete": _X_DELETE(self._delete),
            "xClose": _X_CLOSE(self._close),
            "xWrite": _X_WRITE(self._write),
            "xTruncate": _X_TRUNCATE(self._truncate),
            "xSync": _X_SYNC(self._sync),
        }
        self.vfs.xOpen = ctypes.cast(self._callbacks["xOpen"], ctypes.c_void_p).value
        self.vfs.xDelete = ctypes.cast(self._callbacks["xDelete"], ctypes.c_void_p).value
        self._real_open = _X_OPEN(self.real.xOpen)
        self._real_delete = _X_DELETE(self.real.xDelete)
        self._methods: dict[int, _IoMethods] = {}  # real methods' address -> our copy
        self._files: dict[int, _Open] = {}  # sqlite3_file address -> what it is
        self._logs: dict[str, int] = {}  # tracked path -> its log's descriptor (O_APPEND)
        self._lock = threading.Lock()
        self._trigger = log_dir / "cut-after-writes"
        self._countdown: int | None = None

    def install(self, default: bool = True) -> None:
        """As the default VFS (every connection of the process), or by name (``?vfs=powercut``)."""
        if self.lib.sqlite3_vfs_register(ctypes.addressof(self.vfs), int(default)) != SQLITE_OK:
            raise RuntimeError("cannot register the power-cut VFS")
        probe = sqlite3.connect(":memory:")  # the sqlite3 module must share this libsqlite3
        try:
            probe.execute("select 1")
        finally:
            probe.close()

    # ---- the VFS ----------------------------------------------------------------------------

    def _open(self, vfs: int, name: int | None, file: int, flags: int, out_flags: int) -> int:
        rc: int = self._real_open(self.real_ptr, name, file, flags, out_flags)
        if rc != SQLITE_OK or not name or not flags & _TRACKED:
            return rc
        try:
            path = ctypes.string_at(name).decode()
            pointer = ctypes.c_void_p.from_address(file)
            real = _IoMethods.from_address(pointer.value or 0)
            ours = self._methods.get(pointer.value or 0)
            if ours is None:
                ours = _IoMethods()
                ctypes.memmove(
                    ctypes.addressof(ours), pointer.value or 0, ctypes.sizeof(_IoMethods)
                )
                for field in ("xClose", "xWrite", "xTruncate", "xSync"):
                    setattr(ours, field, ctypes.cast(self._callbacks[field], ctypes.c_void_p).value)
                self._methods[pointer.value or 0] = ours
            with self._lock:
                self._files[file] = _Open(path, real, os.open(path, os.O_RDONLY))
                if path not in self._logs:
                    self._logs[path] = os.open(
                        log_path(self.log_dir, path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
                    )
            pointer.value = ctypes.addressof(ours)
        except Exception as exc:  # noqa: BLE001 - a ctypes callback must answer an rc
            print(f"powercut_vfs: open: {exc!r}", file=sys.stderr)
            return SQLITE_IOERR
        return rc

    def _delete(self, vfs: int, name: bytes, sync_dir: int) -> int:
        rc: int = self._real_delete(self.real_ptr, name, sync_dir)
        path = name.decode()
        with self._lock:
            fd = self._logs.pop(path, None)
            if fd is not None:
                os.close(fd)
            log_path(self.log_dir, path).unlink(missing_ok=True)
        return rc

    def _close(self, file: int) -> int:
        with self._lock:
            opened = self._files.pop(file)
        os.close(opened.reader)
        ctypes.c_void_p.from_address(file).value = ctypes.addressof(opened.real)
        rc: int = _X_CLOSE(opened.real.xClose)(file)
        return rc

    def _record(self, opened: _Open, kind: bytes, offset: int, old: bytes, new: bytes) -> None:
        size = os.fstat(opened.reader).st_size
        os.write(
            self._logs[opened.path], _HEAD.pack(kind, offset, size, len(old), len(new)) + old + new
        )

    def _write(self, file: int, data: int, amount: int, offset: int) -> int:
        opened = self._files[file]
        try:
            with self._lock:
                self._record(
                    opened,
                    b"w",
                    offset,
                    os.pread(opened.reader, amount, offset),
                    ctypes.string_at(data, amount),
                )
        except Exception as exc:  # noqa: BLE001
            print(f"powercut_vfs: write: {exc!r}", file=sys.stderr)
            return SQLITE_IOERR
        rc: int = _X_WRITE(opened.real.xWrite)(file, data, amount, offset)
        if self._countdown is not None:
            self._countdown -= 1
            if self._countdown <= 0:  # the power goes now, with this write not yet synced
                os.kill(os.getpid(), signal.SIGKILL)
        return rc

    def _truncate(self, file: int, size: int) -> int:
        opened = self._files[file]
        try:
            with self._lock:
                tail = max(0, os.fstat(opened.reader).st_size - size)
                self._record(opened, b"t", size, os.pread(opened.reader, tail, size), b"")
        except Exception as exc:  # noqa: BLE001
            print(f"powercut_vfs: truncate: {exc!r}", file=sys.stderr)
            return SQLITE_IOERR
        rc: int = _X_TRUNCATE(opened.real.xTruncate)(file, size)
        return rc

    def _sync(self, file: int, flags: int) -> int:
        opened = self._files[file]
        if (
            self._countdown is None and self._trigger.exists()
        ):  # armed by the harness: cut after N writes
            self._countdown = int(self._trigger.read_text())
            self._trigger.unlink()
        rc: int = _X_SYNC(opened.real.xSync)(file, flags)
        if rc == SQLITE_OK:  # durable now: nothing of this file is at risk any more
            with self._lock:
                os.ftruncate(self._logs[opened.path], 0)
        return rc


# ---- the cut, done by the harness once the process is dead -----------------------------------


@dataclass(frozen=True)
class _Op:
    kind: bytes
    offset: int
    size_before: int
    old: bytes
    new: bytes


def _read_log(path: Path) -> list[_Op]:
    data, ops, at = path.read_bytes(), [], 0
    while at + _HEAD.size <= len(data):
        kind, offset, size, n_old, n_new = _HEAD.unpack_from(data, at)
        at += _HEAD.size
        if at + n_old + n_new > len(data):
            break  # the process died inside this record: its write never started
        ops.append(
            _Op(kind, offset, size, data[at : at + n_old], data[at + n_old : at + n_old + n_new])
        )
        at += n_old + n_new
    return ops


@dataclass
class Cut:
    model: str
    files: int = 0
    unsynced: int = 0  # writes and truncates not yet synced
    reached: int = 0  # of those, how many reached the disk (whole or torn)
    torn: int = 0


def arm(log_dir: Path, writes: int) -> None:
    """Make the running process cut its own power right after its ``writes``-th next write,
    seen at its next sync: a cut in the middle of a commit, which an outside kill rarely hits."""
    (log_dir / "cut-after-writes").write_text(str(writes))


MODELS = ("none", "prefix", "subset", "torn")


def power_cut(db: Path, log_dir: Path, rng: random.Random, model: str | None = None) -> Cut:
    """Turn the files of the dead process into what a power cut would have left on disk."""
    cut = Cut(model or rng.choice(MODELS))
    for log in sorted(log_dir.glob("*.unsynced")):
        target = db.parent / log.name.removesuffix(".unsynced")
        ops = _read_log(log)
        log.unlink()
        if not target.exists() or not ops:
            continue
        cut.files += 1
        cut.unsynced += len(ops)
        with target.open("r+b") as f:
            for op in reversed(ops):  # back to the last sync
                if op.kind == b"w":
                    f.seek(op.offset)
                    f.write(op.old)
                    f.truncate(op.size_before)
                else:
                    f.truncate(op.size_before)
                    f.seek(op.offset)
                    f.write(op.old)
            keep = rng.randrange(len(ops) + 1)
            for i, op in enumerate(ops):  # then forward, as far as the disk got
                reached = {
                    "none": False,
                    "prefix": i < keep,
                    "subset": rng.random() < 0.5,
                    "torn": i <= keep,
                }
                if not reached[cut.model]:
                    continue
                cut.reached += 1
                if op.kind == b"t":
                    f.truncate(op.offset)
                elif cut.model == "torn" and i == keep:
                    cut.torn += 1
                    _tear(f, op, rng)
                else:
                    f.seek(op.offset)
                    f.write(op.new)
    db.with_name(db.name + "-shm").unlink(missing_ok=True)
    return cut


def _tear(f: object, op: _Op, rng: random.Random) -> None:
    """Some sectors of a write reach the disk, some keep the old bytes, some hold garbage."""
    assert hasattr(f, "seek") and hasattr(f, "write")
    start = op.offset
    while start < op.offset + len(op.new):
        end = min((start // _SECTOR + 1) * _SECTOR, op.offset + len(op.new))
        piece = op.new[start - op.offset : end - op.offset]
        fate = rng.choice(("new", "old", "garbage"))
        if fate != "old":
            f.seek(start)
            f.write(piece if fate == "new" else rng.randbytes(len(piece)))
        start = end


_INSTALLED: PowerCutVfs | None = None


def main(argv: list[str]) -> int:
    """``python -m tests.campaigns.powercut_vfs LOGDIR evpay-args...``: the daemon under the shim."""
    log_dir = Path(argv[0])
    log_dir.mkdir(parents=True, exist_ok=True)
    global _INSTALLED
    _INSTALLED = PowerCutVfs(log_dir)
    _INSTALLED.install()
    from gateway.cli import main as evpay

    return evpay(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
