"""The USB transport through pyusb's real core, against an emulated device wired to the simulator."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import Outcome
from drivers.errors import PortOpenFailed
from drivers.money import Money
from drivers.sim.terminal import SimConfig, SimTerminal
from drivers.transport.url import UsbUrl, parse_device_url
from drivers.transport.usb import UsbTransport
from drivers.transport.usb_ids import KNOWN
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
from tests.zvt.usb_emulation import EmulatedTerminal


async def test_usb_preauth_capture_and_replug() -> None:
    device = EmulatedTerminal(vid=KNOWN[0].vid, pid=KNOWN[0].pid)  # a device from the one table
    device.device_port.bind(asyncio.get_running_loop())
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.01))
    serving = asyncio.create_task(sim.serve(device.device_port, serial=True))
    url = parse_device_url("usb://0x0403:0x6001")
    assert isinstance(url, UsbUrl)
    transport = UsbTransport(url, backend=device)
    terminal = ZvtTerminal(
        "t-usb", transport, serial_framing=True, options=ZvtOptions(password="123456", t3=2, t4=3)
    )
    try:
        assert (await terminal.connect()).approved
        assert device.claimed == {0}
        pre = await terminal.preauthorize(Money(5000, "EUR"), "USB-1")
        assert pre.approved
        device.unplug()
        lost = await terminal.status()
        assert lost.outcome is Outcome.ERROR and "unplugged" in lost.message
        device.replug()
        cap = await terminal.capture(pre.ref or "", Money(5000, "EUR"), Money(2000, "EUR"), "USB-1")
        assert cap.approved  # reconnected, re-registered and booked after the replug
        assert sim.state.transactions[int(pre.ref or "")].booked == 2000
    finally:
        await terminal.close()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    assert device.claimed == set()  # released on close


async def test_usb_device_found_by_bus_path_and_missing_device_is_clear() -> None:
    device = EmulatedTerminal(bus=3, ports=(1, 4))
    by_bus, by_id = parse_device_url("usb://bus/3-1.4"), parse_device_url("usb://0x1234:0x5678")
    assert isinstance(by_bus, UsbUrl) and isinstance(by_id, UsbUrl)
    found = UsbTransport(by_bus, backend=device)
    await found.open()
    await found.close()
    missing = UsbTransport(by_id, backend=device)
    with pytest.raises(PortOpenFailed, match="no such USB device"):
        await missing.open()
