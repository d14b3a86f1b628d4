"""A simulator terminal on a real pty (serial framing) or loopback TCP, and a driver for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from drivers.sim.ports import PtyPort, serve_tcp
from drivers.sim.terminal import SimConfig, SimTerminal
from drivers.transport.base import Transport
from drivers.transport.serial import SerialTransport
from drivers.transport.tcp import TcpTransport
from drivers.transport.url import SerialUrl
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal

SIM_PASSWORD = "123456"  # the simulator's, as configured below


@dataclass
class Rig:
    sim: SimTerminal
    make_driver: Callable[..., ZvtTerminal]
    kind: str


@pytest.fixture(params=["pty", "tcp"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    sim = SimTerminal(SimConfig(password=SIM_PASSWORD, card_wait_s=0.05, result_ack_timeout_s=2.0))
    drivers: list[ZvtTerminal] = []

    def factory(transport: Callable[[], Transport], serial: bool) -> Callable[..., ZvtTerminal]:
        def make(**opts: Any) -> ZvtTerminal:  # any ZvtOptions field, checked when built
            options = replace(ZvtOptions(password=SIM_PASSWORD, t3=2.0, t4=3.0), **opts)
            driver = ZvtTerminal("t1", transport(), serial_framing=serial, options=options)
            drivers.append(driver)
            return driver

        return make

    if request.param == "pty":
        port = PtyPort()
        task = asyncio.create_task(sim.serve_line(port))
        yield Rig(sim, factory(lambda: SerialTransport(SerialUrl(port.slave_path)), True), "pty")
        for d in drivers:
            await d.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await port.close()
    else:
        server = await serve_tcp("127.0.0.1", 0, lambda p: sim.serve(p, serial=False))
        tcp_port = server.sockets[0].getsockname()[1]
        yield Rig(sim, factory(lambda: TcpTransport("127.0.0.1", tcp_port), False), "tcp")
        for d in drivers:
            await d.close()
        server.close()
        await server.wait_closed()
