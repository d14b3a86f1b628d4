"""Card first: the driver taps a card at the terminal (its read-card loop, ZVT 06 C0, over a
real pty), then the session starts — at once when the terminal has one free EVSE, else at the
EVSE where the plug-in follows. Money commands abort a waiting read (06 B0) rather than queue
behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.runtime.app import Daemon
from gateway.runtime.charger import SimulatedCharger
from gateway.settings import parse_settings

CONFIG = """
[site]
id = "CARD"
country = "DE"
[storage]
path = "{db}"
[api]
port = 0
[[terminals]]
id = "t1"
device = "serial://{pty}"
password = {{ value = "123456" }}
[charger]
enabled = true
mode = "simulated"
start_paths = ["card"]
{evses}
[pricing]
default_tariff = "T"
tariffs = [ {{ id = "T", currency = "EUR", elements = [
  {{ price_components = [ {{ type = "ENERGY", price = "0.50", vat = "19", step_size = 1 }} ] }} ] }} ]
"""


async def run_site(tmp_path: Path, evses: list[str], scenario: Any) -> list[dict[str, Any]]:
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05, tap_required=True))
    serving = asyncio.create_task(sim.serve(port, serial=True))
    blocks = "".join(f'[[charger.evses]]\nid = "{e}"\nterminal = "t1"\n' for e in evses)
    charger = SimulatedCharger(evses)
    daemon = Daemon(parse_settings(CONFIG.format(db=tmp_path / "c.sqlite3", pty=port.slave_path, evses=blocks),
                                   "<card>"), charger=charger)  # fmt: skip
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10):
            await daemon.ready.wait()
        await scenario(sim, charger, daemon)
        async with asyncio.timeout(20):
            while True:
                rows = [r for r in daemon.store.sessions() if not r["id"].startswith("orphan")]
                if rows and all(r["final"] for r in rows):
                    return rows
                await asyncio.sleep(0.05)
    finally:
        daemon.request_stop("test over")
        await task
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await port.close()


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
            while daemon.engine is None or not daemon.engine._armed:
                await asyncio.sleep(0.05)
        charger.plug_in("E2")  # the driver's EVSE

    (row,) = await run_site(tmp_path, ["E1", "E2"], tap_then_plug)
    assert row["state"] == "completed" and row["data"]["evse"] == "E2"
