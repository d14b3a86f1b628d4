"""An emulated USB terminal behind pyusb's backend interface (usb.backend.IBackend).

pyusb's own core (find, claim, endpoints, bulk transfers) runs unchanged against it; the
device's bulk pipe is wired to the PT simulator, so the real UsbTransport and ZVT driver
talk to the simulated terminal through pyusb without root and without hardware.
``unplug()``/``replug()`` emulate pulling the cable.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from array import array
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from drivers.errors import ConnectionLost
from drivers.sim.ports import Port

EP_IN, EP_OUT = 0x81, 0x01


# pyusb has no type information: its backend base class is Any to mypy.
class EmulatedTerminal(usb.backend.IBackend):  # type: ignore[misc]
    def __init__(
        self, vid: int = 0x0403, pid: int = 0x6001, bus: int = 1, ports: tuple[int, ...] = (1, 2)
    ) -> None:
        self.vid, self.pid, self.bus, self.ports = vid, pid, bus, ports
        self.plugged = True
        self.claimed: set[int] = set()
        self._to_host = bytearray()
        self._cond = threading.Condition()
        self.device_port = _DevicePort(self)

    # ---- test controls ----------------------------------------------------------------
    def unplug(self) -> None:
        with self._cond:
            self.plugged = False
            self.claimed.clear()
            self._cond.notify_all()

    def replug(self) -> None:
        with self._cond:
            self.plugged = True
            self._to_host.clear()

    def push_to_host(self, data: bytes) -> None:
        with self._cond:
            self._to_host += data
            self._cond.notify_all()

    # ---- IBackend -----------------------------------------------------------------------
    def enumerate_devices(self) -> Any:
        if self.plugged:
            yield "emulated-terminal"

    def get_device_descriptor(self, dev: Any) -> Any:
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=1,
            bcdUSB=0x0200,
            bDeviceClass=0,
            bDeviceSubClass=0,
            bDeviceProtocol=0,
            bMaxPacketSize0=64,
            idVendor=self.vid,
            idProduct=self.pid,
            bcdDevice=0x0100,
            iManufacturer=0,
            iProduct=0,
            iSerialNumber=0,
            bNumConfigurations=1,
            address=5,
            bus=self.bus,
            port_number=self.ports[-1],
            port_numbers=self.ports,
            speed=2,
        )

    def get_configuration_descriptor(self, dev: Any, config: int) -> Any:
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=2,
            wTotalLength=32,
            bNumInterfaces=1,
            bConfigurationValue=1,
            iConfiguration=0,
            bmAttributes=0x80,
            bMaxPower=50,
            extra_descriptors=b"",
        )

    def get_interface_descriptor(self, dev: Any, intf: int, alt: int, config: int) -> Any:
        if intf != 0 or alt != 0:
            raise IndexError("no such interface")
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=4,
            bInterfaceNumber=0,
            bAlternateSetting=0,
            bNumEndpoints=2,
            bInterfaceClass=0xFF,
            bInterfaceSubClass=0,
            bInterfaceProtocol=0,
            iInterface=0,
            extra_descriptors=b"",
        )

    def get_endpoint_descriptor(self, dev: Any, ep: int, intf: int, alt: int, config: int) -> Any:
        if ep > 1:
            raise IndexError("no such endpoint")
        return SimpleNamespace(
            bLength=7,
            bDescriptorType=5,
            bEndpointAddress=(EP_IN, EP_OUT)[ep],
            bmAttributes=2,
            wMaxPacketSize=64,
            bInterval=0,
            bRefresh=0,
            bSynchAddress=0,
            extra_descriptors=b"",
        )

    def _check(self) -> None:
        if not self.plugged:
            raise usb.core.USBError(
                "No such device (it may have been disconnected)", -4, errno.ENODEV
            )

    def open_device(self, dev: Any) -> Any:
        self._check()
        return "handle"

    def close_device(self, dev_handle: Any) -> None:
        pass

    def set_configuration(self, dev_handle: Any, config_value: int) -> None:
        self._check()

    def get_configuration(self, dev_handle: Any) -> int:
        return 1

    def claim_interface(self, dev_handle: Any, intf: int) -> None:
        self._check()
        self.claimed.add(intf)

    def release_interface(self, dev_handle: Any, intf: int) -> None:
        self.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: Any, intf: int) -> bool:
        return False

    def bulk_write(
        self, dev_handle: Any, ep: int, intf: int, data: array[int], timeout: int
    ) -> int:
        self._check()
        if intf not in self.claimed:
            raise usb.core.USBError("interface not claimed", -6, errno.EBUSY)
        self.device_port.from_host(bytes(data))
        return len(data)

    def bulk_read(self, dev_handle: Any, ep: int, intf: int, buff: array[int], timeout: int) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._to_host or not self.plugged, timeout / 1000)
            self._check()
            if not self._to_host:
                raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
            n = min(len(buff), len(self._to_host))
            buff[:n] = array("B", self._to_host[:n])
            del self._to_host[:n]
            return n


class _DevicePort(Port):
    """The terminal's side of the bulk pipe, for the simulator."""

    description = "emulated usb device"

    def __init__(self, device: EmulatedTerminal) -> None:
        self._device = device
        self._buffer = bytearray()
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._ready = loop, asyncio.Event()

    def from_host(self, data: bytes) -> None:  # called from pyusb's executor threads
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._arrive, data)

    def _arrive(self, data: bytes) -> None:
        self._buffer += data
        assert self._ready is not None
        self._ready.set()

    async def read(self, timeout: float | None) -> bytes:
        assert self._ready is not None
        if not self._buffer:
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return b""
        data, self._buffer = bytes(self._buffer), bytearray()
        return data

    async def write(self, data: bytes) -> None:
        if not self._device.plugged:
            raise ConnectionLost("unplugged")
        self._device.push_to_host(data)

    async def close(self) -> None:
        pass
