"""The daemon in process on the Adyen site (``adyen_site.open_site``): the ``rigs`` fixture of
the end-to-end acquirer tests (and of the acquirer attack and cancel-by-reference tests), its
``Rig`` handles and the ``Site`` of one daemon life (a cancelled task is the nearest an
in-process test comes to a kill)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.nexo_poi import NexoPoi
from gateway.acquirer.sim import AdyenSimulator
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.runtime.app import Daemon
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.settings import parse_settings
from gateway.store.acquirer import StoredModification
from tests.acquirer.adyen_site import EVSE, open_site
from tests.helpers import EVPAY, subprocess_env


@dataclass
class Site:
    daemon: Daemon
    task: asyncio.Task[int]

    def row(self) -> dict[str, Any]:
        rows = self.daemon.store.sessions(limit=10)
        assert len(rows) == 1
        return rows[0]

    async def wait_state(self, *states: str, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                rows = self.daemon.store.sessions(limit=10)
                if rows and rows[0]["state"] in states:
                    return rows[0]
                await asyncio.sleep(0.05)

    async def wait_modification(self, status: str, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not any(m.status == status for m in self.modifications()):
                await asyncio.sleep(0.05)

    def modifications(self) -> list[StoredModification]:
        book = self.daemon.store.acquirer
        return [*book.waiting(), *book.settled_since(datetime(2000, 1, 1, tzinfo=UTC))]

    async def kill(self) -> None:
        """The nearest an in-process test comes to a kill: the task cancelled, no shutdown."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.daemon.store.close()
        self.daemon.lock.release()


@dataclass
class Rig:
    poi: NexoPoi
    charger: SimulatedCharger
    cpo: CpoSimulator
    adyen: AdyenSimulator
    acq_port: int
    start: Callable[..., Awaitable[Site]]
    config: Path
    stop_poi: Callable[[], Awaitable[None]]
    sites: list[Site] = field(default_factory=list)

    async def evpay(self, *args: str) -> tuple[int, str]:
        """The real CLI against the running daemon's database."""
        proc = await asyncio.create_subprocess_exec(
            *EVPAY,
            *args,
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=subprocess_env(),
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    async def plug(
        self, site: Site, energy_wh: int = 8_000, step_wh: int = 2_000, every_s: float = 0.02
    ) -> None:
        async with asyncio.timeout(20):  # pay requests wait for the CPO registration
            while not (site.daemon.upstream_state() or (False, ""))[0]:
                await asyncio.sleep(0.05)
        self.charger.plug_in(
            EVSE, EvsePlan(energy_wh=energy_wh, step_wh=step_wh, meter_interval_s=every_s)
        )

    async def fac(self, timeout: float = 20) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while not self.cpo.state.facs:
                await asyncio.sleep(0.05)
        (fac,) = self.cpo.state.facs.values()
        return fac

    def poi_psp(self) -> str:
        """Adyen's reference of the POI's one payment (its TransactionID after the dot)."""
        (tid,) = self.poi.ledger
        return tid.rpartition(".")[2]

    def captures(self) -> list[dict[str, Any]]:
        return [m for m in self.adyen.state.applied if m["what"] == "captures"]


Open = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def rigs(tmp_path: Path) -> AsyncIterator[Open]:
    """Opens the rig with the acquirer's variants, webhook deadline and whether it is up."""
    opened: list[tuple[Rig, Callable[[], Awaitable[None]]]] = []

    async def open_rig(
        variants: frozenset[str] = frozenset(),
        deadline: float = 60.0,
        started: bool = True,
        slow_s: float = 1.0,
        incremental: bool = False,
    ) -> Rig:
        parts = await open_site(
            tmp_path / "adyen.sqlite3",
            deadline=deadline,
            variants=variants,
            slow_s=slow_s,
            started=started,
            incremental=incremental,
        )
        charger = SimulatedCharger([EVSE])
        text = parts.text

        async def start() -> Site:
            daemon = Daemon(parse_settings(text, "<e2e-adyen>"), charger=charger)
            task = asyncio.create_task(daemon.run())
            async with asyncio.timeout(20):
                await daemon.ready.wait()
            site = Site(daemon, task)
            rig.sites.append(site)
            return site

        async def close() -> None:
            for site in rig.sites:
                if not site.task.done():
                    site.daemon.request_stop("test over")
                    await site.task
            await charger.close()
            await parts.close()

        config = tmp_path / "site.toml"
        config.write_text(text, encoding="utf-8")
        rig = Rig(
            parts.poi,
            charger,
            parts.cpo,
            parts.adyen,
            parts.acq_port,
            start,
            config,
            parts.poi_runner.cleanup,
        )
        opened.append((rig, close))
        return rig

    yield open_rig
    for _, close in opened:
        await close()
