"""The fiscal flow end to end, as a site runs it: the real daemon, the simulator terminal on a
real pty (the receipt lines are read off the wire it printed), a simulated charger whose meter
signs its readings (OCMF), and the embedded CPO over loopback HTTP, which invoices (and, in
Croatia, fiscalises) from the FAC and sends its data back through DEEVPfiscal."""

from __future__ import annotations

import asyncio
import subprocess
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
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.settings import parse_settings
from tests.helpers import EVPAY, free_port, subprocess_env

METER = ec.generate_private_key(ec.SECP256R1())
METER_KEY = METER.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).hex()  # fmt: skip


def site(db: Path, pty: str, cpo: CpoSimulator, country: str, wait_s: float) -> str:
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
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    running: list[tuple[Site, asyncio.Task[int], PtyPort, asyncio.Task[None]]] = []

    async def make(country: str, fiscal_on_fac: str = "", wait_s: float = 15) -> Site:
        cpo = CpoSimulator()
        cpo.state.fiscal_on_fac = fiscal_on_fac
        await cpo.start()
        port = PtyPort()
        sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
        serving = asyncio.create_task(sim.serve(port, serial=True))
        charger = SimulatedCharger(["E1"])
        text = site(tmp_path / f"{country}.sqlite3", port.slave_path, cpo, country, wait_s)
        (tmp_path / f"{country}.toml").write_text(text, encoding="utf-8")  # for the technician's CLI
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


def block(receipt: list[str], *lines: str) -> bool:
    """``lines`` appear in ``receipt`` one after the other."""
    n = len(lines)
    return any(receipt[i : i + n] == list(lines) for i in range(len(receipt) - n + 1))


def printed_after(sim: SimTerminal, first: str) -> list[str]:
    """The gateway's receipt block: the simulator prints its own payment slip first."""
    lines = sim.state.printed
    return lines[lines.index(first) :] if first in lines else []


async def test_germany_signed_meter_data_on_the_receipt_and_upstream(start: Callable[..., Any]) -> None:
    s: Site = await start("DE")
    s.charger.plug_in("E1", EvsePlan(energy_wh=12_000, step_wh=3_000, meter_key=METER, meter_serial="EMH-0815"))
    await s.until(lambda: s.session()["final"] and s.cpo.state.receipts)
    row = s.session()
    data, ref = row["data"], row["data"]["reference"]
    assert row["state"] == "completed" and data["receipt"] == "complete" and data["billed_energy_wh"] == 12_000
    receipt = printed_after(s.sim, "EV charging at E1")
    assert block(receipt, "Invoice", ref, "Energy 12.000 kWh")  # a 40-column printer: the reference wraps
    assert block(receipt, "Price as shown before charging:", "  0.50 EUR/kWh")  # gross, as the charger showed it
    assert block(receipt, "Net 25% 4.80 EUR", "VAT 25% 1.20 EUR", "Total 6.00 EUR", "Paid by card 6.00 EUR")
    meter = receipt[receipt.index("Signed meter data (OCMF, Eichrecht):") :]
    assert meter[1:4] == ["  meter EMH-0815", "  start 1000000 Wh, stop 1012000 Wh", "  signature verified"]
    assert not any("PENDING" in line or "INCOMPLETE" in line for line in receipt)
    (fac,) = s.cpo.state.facs.values()
    assert f"Invoice: {ref}" in fac["eft_data"] and any(x.startswith("OCMF: meter EMH-0815") for x in fac["eft_data"])
    assert any(line.startswith("OCMF: meter EMH-0815") for line in s.cpo.state.receipts[ref][0]["lines"])
    assert [r["state"] for r in s.cpo.state.receipts[ref]] == ["complete"]


async def test_croatia_the_cpo_signs_and_the_receipt_carries_zki_jir_and_qr(start: Callable[..., Any]) -> None:
    s: Site = await start("HR", fiscal_on_fac="signed")
    s.charger.plug_in("E1", EvsePlan(energy_wh=10_000, step_wh=5_000, meter_key=METER))
    await s.until(lambda: s.session()["final"] and s.cpo.state.receipts)
    data = s.session()["data"]
    ref = data["reference"]
    (sent,) = s.cpo.state.fiscal_sent
    fields = sent["fields"]
    assert data["receipt"] == "complete" and data["invoice_reference"] == sent["invoice_reference_id"]
    receipt = printed_after(s.sim, "EV charging at E1")
    assert block(receipt, f"Invoice {sent['invoice_reference_id']}")
    assert "".join(x for x in receipt if "/invoices/" in x or x.startswith("Invoice at")).startswith("Invoice at http")
    assert block(receipt, "Net 25% 4.00 EUR", "VAT 25% 1.00 EUR", "Total 5.00 EUR", "Paid by card 5.00 EUR")
    text = " ".join(receipt)  # the printer wraps at 40 columns, between words
    assert f"ZKI: {fields['zki']}" in text and f"JIR: {fields['jir']}" in text
    issued = fields["issued_at"][:16].replace("-", "").replace("T", "_").replace(":", "")
    qr = "".join(receipt[receipt.index(next(x for x in receipt if x.startswith("QR: "))) :][:3])
    assert qr.startswith(f"QR: https://porezna.gov.hr/rn?jir={fields['jir']}&datv={issued}&izn=500")
    (message,) = s.cpo.state.receipts[ref]  # the CPO is told what the driver got
    assert message["state"] == "complete" and f"JIR: {fields['jir']}" in message["lines"]


async def test_croatia_offline_prints_pending_then_delivers_the_fiscal_data_once(start: Callable[..., Any]) -> None:
    s: Site = await start("HR", fiscal_on_fac="signed", wait_s=1)
    s.cpo.state.down = True  # the uplink is down while the driver charges and pays
    s.charger.plug_in("E1", EvsePlan(energy_wh=10_000, step_wh=5_000, meter_key=METER))
    await s.until(lambda: s.session()["final"])
    data = s.session()["data"]
    ref = data["reference"]
    assert data["receipt"] == "pending" and data["receipt_missing"] == ["invoice", "zki", "jir"]
    receipt = printed_after(s.sim, "EV charging at E1")
    assert block(receipt, "Invoice", ref)  # our reference: the CPO has not invoiced yet
    assert receipt[-4:-2] == ["FISCAL DATA PENDING", "missing: invoice, zki, jir"]
    assert "".join(receipt[-2:]) == f"e-receipt: https://receipts.example/{ref}"  # a long URL is cut at 40
    assert not any(line.startswith(("ZKI", "JIR", "QR")) for line in receipt)
    printed = len(s.sim.state.printed)

    s.cpo.state.down = False  # back: the FAC goes up, the CPO fiscalises, the e-receipt is delivered
    await s.until(lambda: [r["state"] for r in s.cpo.state.receipts.get(ref, [])] == ["pending", "delivered_late"])
    data = s.session()["data"]
    assert data["receipt"] == "delivered_late" and data["receipt_missing"] == []
    assert data["invoice_reference"] == s.cpo.state.fiscal_sent[0]["invoice_reference_id"]
    assert len(s.sim.state.printed) == printed  # nothing printed for a driver who has gone
    late = s.cpo.state.receipts[ref][1]
    assert any(line.startswith("JIR: ") for line in late["lines"])
    await asyncio.sleep(1.0)
    assert len(s.cpo.state.receipts[ref]) == 2 and len(s.cpo.state.fiscal_sent) == 1  # exactly once
    config = s.daemon.settings.storage.path.with_suffix(".toml")
    shown = subprocess.run([*EVPAY, "sessions", "show", s.session()["id"], "--config", str(config)],
                           capture_output=True, text=True, env=subprocess_env(), check=False)  # fmt: skip
    assert shown.returncode == 0 and f"receipt delivered_late, invoice {data['invoice_reference']}" in shown.stdout
