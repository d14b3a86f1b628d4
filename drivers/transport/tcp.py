"""ZVT over TCP: the ECR opens the connection; all PT messages of a sequence come back on it."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from drivers.errors import ConnectionLost, PortOpenFailed

CONNECT_TIMEOUT = 5.0


class TcpTransport:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.description = f"tcp://{host}:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        await self.close()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise PortOpenFailed(
                f"{self.description}: cannot connect ({exc or 'timeout'}); check the terminal is "
                f"on, "
                "its IP address and ZVT port (often 20007; Feig 22000)"
            ) from None
        self._reader, self._writer = reader, writer
        sock = writer.get_extra_info("socket")
        if sock is not None:  # find a dead peer within ~25 s even when idle
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, opt):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)

    async def read(self, timeout: float) -> bytes:
        if self._reader is None:
            raise ConnectionLost(f"{self.description}: not connected")
        try:
            async with asyncio.timeout(max(timeout, 0)):
                data = await self._reader.read(4096)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise ConnectionLost(f"{self.description}: {exc}") from None
        if not data:
            raise ConnectionLost(f"{self.description}: the terminal closed the connection")
        return data

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise ConnectionLost(f"{self.description}: not connected")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionLost(f"{self.description}: {exc}") from None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
