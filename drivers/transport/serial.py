"""Serial lines (RS-232, USB CDC-ACM, ptys) via pyserial, read through the event loop.

The port is opened non-blocking and its file descriptor watched by the loop: no threads,
no polling sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib

import serial

from drivers.errors import ConnectionLost, PortOpenFailed
from drivers.transport.url import SerialUrl

_PARITY = {
    "N": serial.PARITY_NONE,
    "E": serial.PARITY_EVEN,
    "O": serial.PARITY_ODD,
    "M": serial.PARITY_MARK,
    "S": serial.PARITY_SPACE,
}


class SerialTransport:
    def __init__(self, url: SerialUrl) -> None:
        self.url = url
        self.description = f"serial://{url.path}?baud={url.baud}"
        self._port: serial.Serial | None = None
        self._buffer = bytearray()
        self._ready = asyncio.Event()
        self._lost: str | None = None

    async def open(self) -> None:
        await self.close()
        try:
            port = serial.Serial(
                self.url.path,
                self.url.baud,
                bytesize=serial.EIGHTBITS,
                parity=_PARITY[self.url.parity],
                stopbits=self.url.stopbits,
                timeout=0,
                write_timeout=2,
                exclusive=True,
            )
        except (serial.SerialException, OSError) as exc:
            raise PortOpenFailed(
                f"{self.description}: cannot open ({exc}); check the cable, the device name "
                "(udev symlink) and that the evpay user is in the dialout group"
            ) from None
        with contextlib.suppress(OSError):  # a pty has no modem lines
            port.rts = port.dtr = True  # some terminals only talk once these are raised
        self._port, self._lost = port, None
        self._buffer.clear()
        asyncio.get_running_loop().add_reader(port.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        port = self._port
        if port is None:
            return
        try:
            data = port.read(port.in_waiting or 1)
        except (serial.SerialException, OSError) as exc:
            data, self._lost = b"", f"{self.description}: {exc}"
        if not data and self._lost is None:
            self._lost = f"{self.description}: device gone (unplugged?)"
        if self._lost is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(port.fileno())
        self._buffer += data
        self._ready.set()

    async def read(self, timeout: float) -> bytes:
        if not self._buffer and self._lost is None:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0)):
                    await self._ready.wait()
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            return data
        if self._lost is not None or self._port is None:
            raise ConnectionLost(self._lost or f"{self.description}: not open")
        return b""

    async def write(self, data: bytes) -> None:
        if self._port is None or self._lost is not None:
            raise ConnectionLost(self._lost or f"{self.description}: not open")
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise ConnectionLost(f"{self.description}: {exc}") from None

    async def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(port.fileno())
            with contextlib.suppress(Exception):
                port.close()
