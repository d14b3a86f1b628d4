"""One daemon per database: an exclusive lock on ``<database>.lock`` that holds the owner's pid.

SQLite would let two daemons write the same file in turn; two engines would then each resume
the other's sessions and talk to the same terminal. The second daemon exits at once instead,
naming the first one's pid. The lock dies with its process (flock), so a crash never leaves a
stale lock behind.
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

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise Unavailable(
                f"{self.path.with_suffix('')}: another evpay daemon (pid {owner}) is using this database; "
                "stop it first (systemctl stop evpay)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
