"""The fiscal flow end to end, as a site runs it: the real daemon, the simulator terminal on a
real pty (the receipt lines are read off the wire it printed), a simulated charger whose meter
signs its readings (OCMF), and the embedded CPO over loopback HTTP, which invoices (and, in
Croatia, fiscalises) from the FAC and sends its data back through DEEVPfiscal."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

from drivers.sim.terminal import SimTerminal
from gateway.runtime.charger import EvsePlan
from tests.helpers import EVPAY, subprocess_env
from tests.site_rig import METER, Site


def block(receipt: list[str], *lines: str) -> bool:
    """``lines`` appear in ``receipt`` one after the other."""
    n = len(lines)
    return any(receipt[i : i + n] == list(lines) for i in range(len(receipt) - n + 1))


def printed_after(sim: SimTerminal, first: str) -> list[str]:
    """The gateway's receipt block: the simulator prints its own payment slip first."""
    lines = sim.state.printed
    return lines[lines.index(first) :] if first in lines else []


async def receipt_printed(s: Site, first: str = "EV charging at E1") -> list[str]:
    """The gateway's receipt block once the terminal has printed it. The print command is stored
    with the session's row and sent to the terminal after that commit, so a final row (or the CPO
    holding the receipt message of the same step) does not mean the printer has the lines yet:
    a test that reads the printer waits for the printer."""
    await s.until(lambda: printed_after(s.sim, first))
    return printed_after(s.sim, first)


async def test_germany_signed_meter_data_on_the_receipt_and_upstream(
    start_site: Callable[..., Any],
) -> None:
    s: Site = await start_site("DE")
    s.charger.plug_in(
        "E1", EvsePlan(energy_wh=12_000, step_wh=3_000, meter_key=METER, meter_serial="EMH-0815")
    )
    await s.until(lambda: s.session()["final"] and s.cpo.state.receipts)
    row = s.session()
    data, ref = row["data"], row["data"]["reference"]
    assert (
        row["state"] == "completed"
        and data["receipt"] == "complete"
        and data["billed_energy_wh"] == 12_000
    )
    receipt = await receipt_printed(s)
    assert block(
        receipt, "Invoice", ref, "Energy 12.000 kWh"
    )  # a 40-column printer: the reference wraps
    assert block(
        receipt, "Price as shown before charging:", "  0.50 EUR/kWh"
    )  # gross, as the charger showed it
    assert block(
        receipt, "Net 25% 4.80 EUR", "VAT 25% 1.20 EUR", "Total 6.00 EUR", "Paid by card 6.00 EUR"
    )
    meter = receipt[receipt.index("Signed meter data (OCMF, Eichrecht):") :]
    assert meter[1:4] == [
        "  meter EMH-0815",
        "  start 1000000 Wh, stop 1012000 Wh",
        "  signature verified",
    ]
    assert not any("PENDING" in line or "INCOMPLETE" in line for line in receipt)
    (fac,) = s.cpo.state.facs.values()
    assert f"Invoice: {ref}" in fac["eft_data"] and any(
        x.startswith("OCMF: meter EMH-0815") for x in fac["eft_data"]
    )
    assert any(
        line.startswith("OCMF: meter EMH-0815") for line in s.cpo.state.receipts[ref][0]["lines"]
    )
    assert [r["state"] for r in s.cpo.state.receipts[ref]] == ["complete"]


async def test_croatia_the_cpo_signs_and_the_receipt_carries_zki_jir_and_qr(
    start_site: Callable[..., Any],
) -> None:
    s: Site = await start_site("HR", fiscal_on_fac="signed")
    s.charger.plug_in("E1", EvsePlan(energy_wh=10_000, step_wh=5_000, meter_key=METER))
    await s.until(lambda: s.session()["final"] and s.cpo.state.receipts)
    data = s.session()["data"]
    ref = data["reference"]
    (sent,) = s.cpo.state.fiscal_sent
    fields = sent["fields"]
    assert (
        data["receipt"] == "complete" and data["invoice_reference"] == sent["invoice_reference_id"]
    )
    receipt = await receipt_printed(s)
    assert block(receipt, f"Invoice {sent['invoice_reference_id']}")
    assert "".join(
        x for x in receipt if "/invoices/" in x or x.startswith("Invoice at")
    ).startswith("Invoice at http")
    assert block(
        receipt, "Net 25% 4.00 EUR", "VAT 25% 1.00 EUR", "Total 5.00 EUR", "Paid by card 5.00 EUR"
    )
    text = " ".join(receipt)  # the printer wraps at 40 columns, between words
    assert f"ZKI: {fields['zki']}" in text and f"JIR: {fields['jir']}" in text
    issued = fields["issued_at"][:16].replace("-", "").replace("T", "_").replace(":", "")
    qr = "".join(receipt[receipt.index(next(x for x in receipt if x.startswith("QR: "))) :][:3])
    assert qr.startswith(f"QR: https://porezna.gov.hr/rn?jir={fields['jir']}&datv={issued}&izn=500")
    (message,) = s.cpo.state.receipts[ref]  # the CPO is told what the driver got
    assert message["state"] == "complete" and f"JIR: {fields['jir']}" in message["lines"]


async def test_croatia_offline_prints_pending_then_delivers_the_fiscal_data_once(
    start_site: Callable[..., Any],
) -> None:
    s: Site = await start_site("HR", fiscal_on_fac="signed", wait_s=1)
    s.cpo.state.down = True  # the uplink is down while the driver charges and pays
    s.charger.plug_in("E1", EvsePlan(energy_wh=10_000, step_wh=5_000, meter_key=METER))
    await s.until(lambda: s.session()["final"])
    data = s.session()["data"]
    ref = data["reference"]
    assert data["receipt"] == "pending" and data["receipt_missing"] == ["invoice", "zki", "jir"]
    receipt = await receipt_printed(s)
    assert block(receipt, "Invoice", ref)  # our reference: the CPO has not invoiced yet
    assert receipt[-4:-2] == ["FISCAL DATA PENDING", "missing: invoice, zki, jir"]
    assert (
        "".join(receipt[-2:]) == f"e-receipt: https://receipts.example/{ref}"
    )  # a long URL is cut at 40
    assert not any(line.startswith(("ZKI", "JIR", "QR")) for line in receipt)
    printed = len(s.sim.state.printed)

    s.cpo.state.down = (
        False  # back: the FAC goes up, the CPO fiscalises, the e-receipt is delivered
    )
    await s.until(
        lambda: (
            [r["state"] for r in s.cpo.state.receipts.get(ref, [])] == ["pending", "delivered_late"]
        )
    )
    data = s.session()["data"]
    assert data["receipt"] == "delivered_late" and data["receipt_missing"] == []
    assert data["invoice_reference"] == s.cpo.state.fiscal_sent[0]["invoice_reference_id"]
    assert len(s.sim.state.printed) == printed  # nothing printed for a driver who has gone
    late = s.cpo.state.receipts[ref][1]
    assert any(line.startswith("JIR: ") for line in late["lines"])
    await asyncio.sleep(1.0)
    assert len(s.cpo.state.receipts[ref]) == 2 and len(s.cpo.state.fiscal_sent) == 1  # exactly once
    config = s.daemon.settings.storage.path.with_suffix(".toml")
    shown = subprocess.run(
        [*EVPAY, "sessions", "show", s.session()["id"], "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert (
        shown.returncode == 0
        and f"receipt delivered_late, invoice {data['invoice_reference']}" in shown.stdout
    )
