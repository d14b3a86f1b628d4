"""Card first: the driver taps a card at the terminal (its read-card loop, ZVT 06 C0, over a
real pty), then the session starts — at once when the terminal has one free EVSE, else at the
EVSE where the plug-in follows. Money commands abort a waiting read (06 B0) rather than queue
behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.runtime.app import Daemon
from gateway.runtime.charger import SimulatedCharger
from gateway.settings import parse_settings
from tests.helpers import pty_terminal, running
from tests.site_rig import site_toml


async def run_site(tmp_path: Path, evses: list[str], scenario: Any) -> list[dict[str, Any]]:
    charger = SimulatedCharger(evses)
    async with pty_terminal(SimConfig(password="123456", card_wait_s=0.05, tap_required=True)) as (
        sim,
        pty,
    ):
        text = site_toml(
            tmp_path / "c.sqlite3",
            {"t1": f"serial://{pty}"},
            site="CARD",
            evses=dict.fromkeys(evses, "t1"),
            charger='mode = "simulated"\nstart_paths = ["card"]',
        )
        async with running(Daemon(parse_settings(text, "<card>"), charger=charger)) as daemon:
            async with asyncio.timeout(10):
                await daemon.ready.wait()
            await scenario(sim, charger, daemon)
            async with asyncio.timeout(20):
                while True:
                    rows = [r for r in daemon.store.sessions() if not r["id"].startswith("orphan")]
                    if rows and all(r["final"] for r in rows):
                        return rows
                    await asyncio.sleep(0.05)


async def test_a_tap_starts_the_session_at_the_terminals_only_evse(tmp_path: Path) -> None:
    async def tap(sim: SimTerminal, _charger: SimulatedCharger, daemon: Daemon) -> None:
        await asyncio.sleep(0.5)  # the loop is reading
        assert daemon.store.sessions() == []
        sim.tap()

    (row,) = await run_site(tmp_path, ["E1"], tap)
    assert row["state"] == "completed", row["data"]["notes"]
    assert row["data"]["evse"] == "E1" and row["data"]["captured_minor"] > 0


async def test_with_two_evses_the_plug_in_after_the_tap_chooses(tmp_path: Path) -> None:
    async def tap_then_plug(sim: SimTerminal, charger: SimulatedCharger, daemon: Daemon) -> None:
        await asyncio.sleep(0.3)
        charger.plug_in("E1")  # no card yet: plug starts are off at this site
        await asyncio.sleep(0.2)
        assert daemon.store.sessions() == []
        sim.tap()
        async with asyncio.timeout(5):
            while daemon.engine is None or not daemon.engine.admission.armed:
                await asyncio.sleep(0.05)
        charger.plug_in("E2")  # the driver's EVSE

    (row,) = await run_site(tmp_path, ["E1", "E2"], tap_then_plug)
    assert row["state"] == "completed" and row["data"]["evse"] == "E2"
