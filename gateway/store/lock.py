"""One daemon per database: an exclusive lock on ``<database>.lock`` that holds the owner's pid.

SQLite would let two daemons write the same file in turn; two engines would then each resume
the other's sessions and talk to the same terminal. The second daemon exits at once instead,
naming the first one's pid. The lock dies with its process (flock), so a crash never leaves a
stale lock behind.

The file also tells how the last daemon ended: a clean stop writes ``stopped`` into it, so a
pid found there by the next start means the last run was killed or lost power, and the start
checks the database file before it says READY (``unclean``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gateway.errors import Unavailable


class DatabaseLock:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None
        self.unclean = False  # the last daemon on this database did not stop cleanly

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise Unavailable(
                f"{self.path.with_suffix('')}: another evpay daemon (pid {owner}) is using this "
                f"database; "
                "stop it first (systemctl stop evpay)"
            ) from None
        previous = os.read(fd, 32).decode("ascii", "replace").strip()
        self.unclean = previous not in ("", _STOPPED)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self, *, clean: bool = False) -> None:
        """Drop the lock; ``clean``: the daemon stopped in order (its store closed)."""
        if self._fd is not None:
            if clean:
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, f"{_STOPPED}\n".encode("ascii"), 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


_STOPPED = "stopped"
