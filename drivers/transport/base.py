"""What every transport is: an async byte pipe that reports a lost connection."""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    description: str

    async def open(self) -> None:
        """Open or reopen; raises PortOpenFailed saying what to check."""

    async def read(self, timeout: float) -> bytes:
        """Bytes that arrived, or b"" after ``timeout`` seconds; ConnectionLost if gone."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...
