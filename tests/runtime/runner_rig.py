"""One terminal's runner against the ZVT simulator on loopback TCP, with the engine host on a
real SQLite store and a fake clock: the rig of the tests that kill or drop the line between a
terminal's answer and our record of it. Each runner gets a new driver (a restart's is new)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from drivers.base import TerminalResult
from drivers.money import Money
from drivers.sim.ports import Port, serve_tcp
from drivers.sim.terminal import SimConfig, SimTerminal
from drivers.transport.tcp import TcpTransport
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.routing import Health
from gateway.runtime.engine_host import EngineHost, Handled
from gateway.runtime.terminal_runner import TerminalRunner
from gateway.store import Store
from tests.payments.fixtures import DAY_TARIFF, Clock, policy, wall_clock


@dataclass
class RunnerRig:
    sim: SimTerminal
    port: int
    store: Store
    clock: Clock
    host: EngineHost
    drivers: list[ZvtTerminal] = field(default_factory=list)
    lines: list[Port] = field(default_factory=list)  # the simulator's side of each connection

    def runner(
        self,
        register_timeout_s: float = 5.0,
        process: Callable[[e.Event], Handled] | None = None,
    ) -> tuple[TerminalRunner, list[e.Event]]:
        """A runner for "T1" on a new driver, and the list its terminal results land in."""
        driver = ZvtTerminal(
            "T1",
            TcpTransport("127.0.0.1", self.port),
            serial_framing=False,
            options=ZvtOptions(password="123456", t3=2.0, t4=3.0),
        )
        self.drivers.append(driver)
        heard: list[e.Event] = []
        made = TerminalRunner(
            name="T1",
            terminal=driver,
            host=self.host,
            board={},
            health=Health(),
            take=heard.append,
            process=process or self.host.handle,
            dispatch=lambda _: None,
            currency="EUR",
            register_timeout_s=register_timeout_s,
        )
        return made, heard

    async def run(
        self, runner: TerminalRunner, heard: list[e.Event], ev: e.Event
    ) -> list[c.Command]:
        """``ev`` into the host, each terminal command it leads to carried out by ``runner`` and
        each answer fed back, until none is left; the other commands, in order."""
        todo = list(self.host.handle(ev).commands)
        left: list[c.Command] = []
        while todo:
            cmd = todo.pop(0)
            if isinstance(cmd, c.TerminalCommand):
                await runner.execute(cmd)
                while heard:
                    todo += self.host.handle(heard.pop(0)).commands
            else:
                left.append(cmd)
        return left

    async def capture_unheard(self, stop: e.ChargerStopped) -> tuple[c.Capture, TerminalResult]:
        """``stop`` into the host, and the capture it leads to carried out by the last driver
        with no one to hear the answer (the daemon dies): that driver closed, a minute on."""
        (capture,) = [x for x in self.host.handle(stop).commands if isinstance(x, c.Capture)]
        done = await self.drivers[-1].capture(
            capture.ref,
            Money(capture.held_minor, "EUR"),
            Money(capture.amount_minor, "EUR"),
            capture.reference,
        )
        assert done.approved
        await self.drivers[-1].close()
        self.clock.advance(60)
        return capture, done


@asynccontextmanager
async def runner_rig(tmp_path: Path, config: SimConfig) -> AsyncIterator[RunnerRig]:
    """The simulator serving ``config`` on a loopback port, the host on ``evpay.sqlite3`` in
    ``tmp_path`` (fixed-hold policy, the clock at the real now); closed whatever happened."""
    sim = SimTerminal(config)
    lines: list[Port] = []

    async def serve(port: Port) -> None:
        lines.append(port)
        await sim.serve(port, serial=False)

    server = await serve_tcp("127.0.0.1", 0, serve)
    store = Store.open(tmp_path / "evpay.sqlite3")
    clock = wall_clock(0)
    host = EngineHost(store, policy(tariffs={"*": DAY_TARIFF}), clock)
    rig = RunnerRig(sim, server.sockets[0].getsockname()[1], store, clock, host, lines=lines)
    try:
        yield rig
    finally:
        for driver in rig.drivers:
            await driver.close()
        server.close()
        await server.wait_closed()
        store.close()
