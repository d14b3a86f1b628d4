"""Where the simulator listens: a pty (the driver opens its slave as a serial port) or TCP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import socket
import struct
import termios
import tty
from collections.abc import Awaitable, Callable

from drivers.errors import ConnectionLost


class Port:
    """The simulator's end of one connection."""

    description = "port"

    async def read(
        self, timeout: float | None
    ) -> bytes:  # b"" on timeout, ConnectionLost if closed
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def reset(self) -> None:
        """The line cut: a TCP connection is reset; a serial line just goes quiet (the caller
        decides what comes back)."""


class StreamPort(Port):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.description = f"tcp peer {writer.get_extra_info('peername')}"

    async def read(self, timeout: float | None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                data = await self._reader.read(4096)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise ConnectionLost(str(exc)) from None
        if not data:
            raise ConnectionLost("peer closed")
        return data

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionLost(str(exc)) from None

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def reset(self) -> None:
        sock = self._writer.get_extra_info("socket")
        if sock is not None:  # linger 0: closing sends RST, not FIN
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()


class PtyPort(Port):
    """The master side of a pty; ``slave_path`` is what the driver opens as its serial device."""

    def __init__(self) -> None:
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave, termios.TCSANOW)
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(self._slave)
        self.description = f"pty {self.slave_path}"
        self._buffer = bytearray()
        self._ready = asyncio.Event()
        self._watching = False

    def _on_readable(self) -> None:
        try:
            self._buffer += os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            # EIO: nobody has the slave open right now (the driver closed it). Stop watching
            # (the fd would stay readable and spin the loop) and look again shortly: a
            # driver that reconnects reopens the slave.
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.master)
            loop.call_later(0.05, self._rewatch)
            return
        self._ready.set()

    def _rewatch(self) -> None:
        if self._watching:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().add_reader(self.master, self._on_readable)

    async def read(self, timeout: float | None) -> bytes:
        if not self._watching:
            asyncio.get_running_loop().add_reader(self.master, self._on_readable)
            self._watching = True
        if not self._buffer:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        data, self._buffer = bytes(self._buffer), bytearray()
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            view = view[written:]

    def discard(self) -> None:
        """Lose what the driver wrote meanwhile (a serial cable that was out)."""
        self._buffer.clear()
        with contextlib.suppress(OSError):
            while os.read(self.master, 4096):
                pass

    async def close(self) -> None:
        if self._watching:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.master)
            self._watching = False
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


async def serve_tcp(
    host: str, port: int, handler: Callable[[Port], Awaitable[object]]
) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = StreamPort(reader, writer)
        try:
            await handler(conn)
        finally:
            await conn.close()

    return await asyncio.start_server(on_connect, host, port)
