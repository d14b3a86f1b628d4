"""Raw USB bulk endpoints via pyusb, for terminals that expose no CDC-ACM serial port.

The ZVT serial framing runs over the bulk pipe. The device is found by VID:PID or by its
bus path (stable across replug on the same socket); the interface is claimed (detaching a
kernel driver if one holds it) and released on close. pyusb calls block, so they run in
the default executor in slices of ``_SLICE_MS``, never longer than the caller's deadline.
An unplugged device surfaces as ConnectionLost; the next ``open()`` finds it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from typing import Any

import usb.core
import usb.util

from drivers.errors import ConnectionLost, PortOpenFailed
from drivers.transport.url import UsbUrl
from drivers.transport.usb_ids import KNOWN

_SLICE_MS = 100
_READ_SIZE = 512


class UsbTransport:
    def __init__(self, url: UsbUrl, *, interface: int = 0, backend: Any = None) -> None:
        self.url = url
        self.interface = interface
        self.backend = backend
        self.description = (
            f"usb://{url.vid:04x}:{url.pid:04x}"
            if url.vid is not None and url.pid is not None
            else f"usb://bus/{url.bus_path}"
        )
        known = next((d for d in KNOWN if (d.vid, d.pid) == (url.vid, url.pid)), None)
        if known is not None:  # the name the udev rules give it, for logs and errors
            self.description += f" ({known.name})"
        self._dev: Any = None
        self._ep_in: Any = None
        self._ep_out: Any = None

    def _find(self) -> Any:
        try:
            return self._find_device()
        except usb.core.NoBackendError:
            raise PortOpenFailed(
                f"{self.description}: no USB backend: install libusb (apt-get install libusb-1.0-0)"
            ) from None

    def _find_device(self) -> Any:
        if self.url.bus_path is not None:
            bus, _, ports = self.url.bus_path.partition("-")
            wanted = tuple(int(p) for p in ports.split(".")) if ports else ()

            def match(dev: Any) -> bool:
                return bool(dev.bus == int(bus) and tuple(dev.port_numbers or ()) == wanted)

            return usb.core.find(custom_match=match, backend=self.backend)
        return usb.core.find(idVendor=self.url.vid, idProduct=self.url.pid, backend=self.backend)

    def _open_blocking(self) -> None:
        dev = self._find()
        if dev is None:
            raise PortOpenFailed(
                f"{self.description}: no such USB device; check the cable, `lsusb`, and the udev "
                f"rule "
                "that gives the evpay group access"
            )
        try:
            with contextlib.suppress(NotImplementedError, usb.core.USBError):
                if dev.is_kernel_driver_active(self.interface):
                    dev.detach_kernel_driver(self.interface)
            dev.set_configuration()
            usb.util.claim_interface(dev, self.interface)
            intf = dev.get_active_configuration()[(self.interface, 0)]
            direction = usb.util.endpoint_direction
            self._ep_in = usb.util.find_descriptor(
                intf, custom_match=lambda e: direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN
            )
            self._ep_out = usb.util.find_descriptor(
                intf, custom_match=lambda e: direction(e.bEndpointAddress) == usb.util.ENDPOINT_OUT
            )
        except usb.core.USBError as exc:
            raise PortOpenFailed(
                f"{self.description}: cannot claim interface {self.interface}: {exc}"
            ) from None
        if self._ep_in is None or self._ep_out is None:
            raise PortOpenFailed(
                f"{self.description}: interface {self.interface} has no bulk IN/OUT endpoint pair"
            )
        self._dev = dev

    async def open(self) -> None:
        await self.close()
        await asyncio.get_running_loop().run_in_executor(None, self._open_blocking)

    def _lost(self, exc: usb.core.USBError) -> ConnectionLost:
        self._dev = None
        gone = exc.errno in (errno.ENODEV, errno.EIO, errno.EPIPE)
        return ConnectionLost(f"{self.description}: {'device unplugged' if gone else exc}")

    def _read_blocking(self, timeout_ms: int) -> bytes:
        try:
            return bytes(self._ep_in.read(_READ_SIZE, timeout_ms))
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as exc:
            raise self._lost(exc) from None

    async def read(self, timeout: float) -> bytes:
        if self._dev is None:
            raise ConnectionLost(f"{self.description}: not open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0)
        while True:
            slice_ms = max(1, min(_SLICE_MS, int((deadline - loop.time()) * 1000)))
            data = await loop.run_in_executor(None, self._read_blocking, slice_ms)
            if data or loop.time() >= deadline:
                return data

    async def write(self, data: bytes) -> None:
        if self._dev is None:
            raise ConnectionLost(f"{self.description}: not open")

        def write_blocking() -> None:
            try:
                self._ep_out.write(data, 2000)
            except usb.core.USBError as exc:
                raise self._lost(exc) from None

        await asyncio.get_running_loop().run_in_executor(None, write_blocking)

    async def close(self) -> None:
        dev, self._dev = self._dev, None
        if dev is not None:
            with contextlib.suppress(usb.core.USBError):
                usb.util.release_interface(dev, self.interface)
            usb.util.dispose_resources(dev)
