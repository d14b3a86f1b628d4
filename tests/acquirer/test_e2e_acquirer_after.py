"""The Adyen session end to end (the rig of ``test_e2e_acquirer``), after the capture: a refund
once the driver has gone, CAPTURE_FAILED before or after its CAPTURE, the hold grown by
amountUpdates or refused, and webhooks that come late (moved from ``test_e2e_acquirer``)."""

from __future__ import annotations

import asyncio

from tests.acquirer import test_e2e_acquirer as e2e
from tests.acquirer.rig import post_webhook

rigs = e2e.rigs  # the real daemon, nexo POI and acquirer simulator on loopback


async def test_a_refund_goes_to_the_acquirer_when_the_terminal_is_gone(rigs: e2e.Open) -> None:
    rig = await rigs(frozenset({"slow"}), slow_s=1.0)
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed")
    code, out = await rig.evpay("sessions", "show", row["id"])
    assert "waiting:" not in out
    await rig.stop_poi()  # the driver has gone: no terminal to present a card to
    code, out = await rig.evpay(
        "sessions", "refund", row["id"], "--amount", "2.00", "--reason", "goodwill", "--wait", "25"
    )
    assert code == 0 and "status done" in out, out
    (refund,) = [m for m in rig.adyen.state.applied if m["what"] == "refunds"]
    assert refund["payment"] == rig.poi_psp() and refund["amount"]["value"] == 200
    (done,) = site.row()["data"]["refunds"]
    assert (done["method"], done["status"], done["amount_minor"]) == ("acquirer", "done", 200)


async def test_a_capture_failed_after_its_capture_undoes_the_booking(rigs: e2e.Open) -> None:
    """The simulator's "capture failed after received": CAPTURE, then CAPTURE_FAILED. The
    session is booked completed and its FAC goes; the failure undoes the booking (owed,
    capture_failed) and the CPO gets the corrected FAC for the same authorization_reference."""
    rig = await rigs(frozenset({"capture_failed"}))
    site = await rig.start()
    await rig.plug(site)
    await site.wait_state("completed", "capture_failed")
    await rig.adyen.settle()
    row = await site.wait_state("capture_failed")
    data = row["data"]
    assert data["captured_minor"] == 0 and data["owed_minor"] == 595, data["notes"]
    (said,) = data["discrepancies"]
    assert "failed (Capture failed)" in said and ":capture:" in said and "undone" in said
    sid = row["id"]
    async with asyncio.timeout(15):
        while f"{sid[:34]}-C" not in rig.cpo.state.facs:
            await asyncio.sleep(0.05)
    corrected = rig.cpo.state.facs[f"{sid[:34]}-C"]
    assert corrected["capture_status_code"] == "FAILED", corrected
    first = rig.cpo.state.facs.get(sid[:36])
    if first is not None:  # the booked outcome went first: the correction names it
        assert corrected["authorization_reference"] == first["authorization_reference"]
        assert f"correction of FAC {sid[:36]}" in corrected["capture_status_message"]


async def test_a_capture_failed_before_its_capture_leaves_the_price_owed(rigs: e2e.Open) -> None:
    rig = await rigs(frozenset({"capture_failed", "reorder"}))
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("capture_failed", "capture_unconfirmed", "capture_lapsed")
    async with asyncio.timeout(10):
        while not site.row()["final"]:
            await asyncio.sleep(0.05)
    data = site.row()["data"]
    assert data["captured_minor"] == 0 and data["owed_minor"] == 595, (row["state"], data)
    assert len(rig.captures()) == 1


async def test_an_incremental_hold_grows_by_amount_updates_at_the_acquirer(rigs: e2e.Open) -> None:
    rig = await rigs(incremental=True)
    site = await rig.start()
    await rig.plug(site, step_wh=500, every_s=0.3)  # the webhook comes before the cap
    row = await site.wait_state("completed")
    data = row["data"]
    assert data["captured_minor"] == 595, data["notes"]
    updates = [m for m in rig.adyen.state.applied if m["what"] == "amountUpdates"]
    assert updates and all(u["payment"] == rig.poi_psp() for u in updates)
    totals = [u["amount"]["value"] for u in updates]
    assert totals == sorted(totals) and totals[-1] == data["authorized_minor"] >= 595
    (capture,) = rig.captures()
    assert capture["amount"]["value"] == 595


async def test_a_declined_adjustment_stops_the_charge_at_the_cap(rigs: e2e.Open) -> None:
    rig = await rigs(frozenset({"adjustment_declined"}), incremental=True)
    site = await rig.start()
    await rig.plug(site, step_wh=500, every_s=0.3)  # the webhook comes before the cap
    row = await site.wait_state("completed", "capture_failed", "capture_lapsed")
    async with asyncio.timeout(10):
        while not site.row()["final"]:
            await asyncio.sleep(0.05)
    data = site.row()["data"]
    assert data["authorized_minor"] == 200  # the hold never grew
    refused = any("top-up refused" in n for n in data["notes"])
    assert data["captured_minor"] <= 200 and refused, data["notes"]
    assert row["state"] != "charging"


async def test_a_refund_without_its_webhook_is_unknown_until_a_late_one_decides(
    rigs: e2e.Open,
) -> None:
    rig = await rigs(frozenset({"lost"}), deadline=1.5)
    site = await rig.start()
    await rig.plug(site)
    await site.wait_state("capture_unconfirmed")
    (capture,) = rig.captures()
    await post_webhook(rig, "CAPTURE", capture, success=True)
    row = await site.wait_state("completed")
    code, out = await rig.evpay(
        "sessions", "refund", row["id"], "--amount", "1.00", "--reason", "goodwill", "--wait", "20"
    )
    assert code == 1 and "status unknown" in out, out  # no webhook by the deadline
    (refund,) = [m for m in rig.adyen.state.applied if m["what"] == "refunds"]
    await post_webhook(rig, "REFUND", refund, success=True)  # late: still the evidence
    async with asyncio.timeout(15):
        while site.row()["data"]["refunds"][0]["status"] != "done":
            await asyncio.sleep(0.05)
    (done,) = site.row()["data"]["refunds"]
    assert (done["method"], done["amount_minor"]) == ("acquirer", 100)
