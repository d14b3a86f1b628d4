"""A whole site for end-to-end tests: the real daemon, the simulator terminal on a real pty, the
in-process charger (whose meter can sign) and the embedded CPO over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.runtime.app import Daemon
from gateway.runtime.charger import SimulatedCharger
from gateway.settings import parse_settings
from tests.helpers import free_port

METER = ec.generate_private_key(ec.SECP256R1())
METER_KEY = (
    METER.public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    .hex()
)


def site(
    db: Path,
    pty: str,
    cpo: CpoSimulator,
    country: str,
    wait_s: float,
    terminal: str = "",
    extra: str = "",
) -> str:
    listen = free_port()
    return f"""
[site]
id = "{country}-SITE"
country = "{country}"
timezone = "Europe/Zagreb"
[storage]
path = "{db}"
[api]
port = 0
[[terminals]]
id = "t1"
device = "serial://{pty}"
password = {{ value = "123456" }}
{terminal}
[charger]
enabled = true
mode = "simulated"
[[charger.evses]]
id = "E1"
terminal = "t1"
meter_public_key = "{METER_KEY}"
[fiscal]
profile = "{country}"
wait_s = {wait_s}
e_receipt_url = "https://receipts.example/{{reference}}"
[upstream]
enabled = true
allow_insecure_http = true
versions_url = "{cpo.versions_url}"
token_a = {{ value = "{cpo.state.token_a}" }}
key = {{ value = "{Fernet.generate_key().decode()}" }}
listen = "127.0.0.1:{listen}"
public_url = "http://127.0.0.1:{listen}/ocpi/versions"
[pricing]
fixed_hold = {{ EUR = "50.00" }}
hold_min = "1.00"
default_tariff = "T"
tariffs = [ {{ id = "T", currency = "EUR", elements = [
  {{ price_components = [ {{ type = "ENERGY", price = "0.40", vat = "25", step_size = 1 }} ] }} ] }} ]
{extra}
"""


@dataclass
class Site:
    sim: SimTerminal
    cpo: CpoSimulator
    charger: SimulatedCharger
    daemon: Daemon

    async def until(self, done: Callable[[], object], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.05)

    def session(self) -> dict[str, Any]:
        (row,) = [r for r in self.daemon.store.sessions() if not r["id"].startswith("orphan")]
        return row


@pytest.fixture
async def start_site(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_site(country, fiscal_on_fac="", wait_s=15, terminal="", extra="")``: a running site."""
    running: list[tuple[Site, asyncio.Task[int], PtyPort, asyncio.Task[None]]] = []

    async def make(
        country: str,
        fiscal_on_fac: str = "",
        wait_s: float = 15,
        terminal: str = "",
        extra: str = "",
    ) -> Site:
        cpo = CpoSimulator()
        cpo.state.fiscal_on_fac = fiscal_on_fac
        await cpo.start()
        port = PtyPort()
        sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
        serving = asyncio.create_task(sim.serve_line(port))
        charger = SimulatedCharger(["E1"])
        text = site(
            tmp_path / f"{country}.sqlite3", port.slave_path, cpo, country, wait_s, terminal, extra
        )
        (tmp_path / f"{country}.toml").write_text(
            text, encoding="utf-8"
        )  # for the technician's CLI
        daemon = Daemon(parse_settings(text, "<fiscal>"), charger=charger)
        task = asyncio.create_task(daemon.run())
        s = Site(sim, cpo, charger, daemon)
        running.append((s, task, port, serving))
        await s.until(lambda: daemon.ready.is_set() and cpo.state.tokens, 15)
        return s

    yield make
    for s, task, port, serving in running:
        s.daemon.request_stop("test over")
        await task
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await port.close()
        await s.cpo.stop()
        await s.charger.close()
