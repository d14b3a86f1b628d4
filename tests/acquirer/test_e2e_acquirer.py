"""An Adyen session end to end with real parts: the daemon (store, supervisor, engine worker,
upstream worker with its listener), the nexo POI simulator speaking Adyen's JSON on loopback,
the simulated Adyen Checkout API (``evpay simulate acquirer``'s) on loopback sending signed
webhooks to the receiver on the daemon's OCPI listener, and the CPO simulator taking the FAC.

The pre-authorisation is made at the POI; the capture goes to the acquirer, never to the POI
(no Completion), and the session is booked only on the CAPTURE webhook."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from drivers.nexo import messages as nm
from drivers.nexo.model import PaymentType
from drivers.sim.nexo_poi import NexoPoi
from tests.acquirer import daemon_rig
from tests.acquirer.daemon_rig import Open as Open  # re-exported (with Rig, Site and rigs):
from tests.acquirer.daemon_rig import Rig as Rig  # the acquirer attack and cancel-by-reference
from tests.acquirer.daemon_rig import Site as Site  # tests import them from here
from tests.acquirer.rig import post_webhook
from tests.payments.test_e2e import price_minor

rigs = daemon_rig.rigs  # the fixture (the acquirer attack tests import it from here)


def completions(poi: NexoPoi) -> int:
    return sum(
        1
        for m in poi.requests
        if isinstance(m.body, nm.PaymentRequest)
        and m.body.payment_data is not None
        and m.body.payment_data.payment_type is PaymentType.COMPLETION
    )


async def test_a_session_authorised_at_the_poi_is_captured_by_the_acquirer(rigs: Open) -> None:
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed")
    data = row["data"]
    assert data["captured_minor"] == price_minor(8_000) == 595, data["notes"]
    (capture,) = rig.captures()  # one capture at the acquirer, against the POI's payment
    assert capture["amount"] == {"currency": "EUR", "value": 595}
    assert capture["payment"] == rig.poi_psp()
    assert completions(rig.poi) == 0  # never captured at the POI
    fac = await rig.fac()
    assert fac["capture_status_code"] == "SUCCESS"
    (stored,) = site.modifications()
    assert stored.status == "confirmed"


async def test_a_charge_without_energy_releases_the_hold_by_a_cancel(rigs: Open) -> None:
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site, energy_wh=0)
    row = await site.wait_state("voided", "completed", "capture_failed")
    data = row["data"]
    assert row["state"] == "voided", (row["state"], data["notes"])
    assert data["released_minor"] == 5000 and data["captured_minor"] == 0
    (cancel,) = [m for m in rig.adyen.state.applied if m["what"] == "cancels"]
    assert cancel["payment"] == rig.poi_psp() and not rig.captures()


async def test_a_duplicated_webhook_is_booked_once(rigs: Open) -> None:
    rig = await rigs(frozenset({"duplicate"}))
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed")
    await rig.adyen.settle()
    assert row["data"]["captured_minor"] == 595 and len(rig.captures()) == 1
    (note,) = site.daemon.store.acquirer.notifications("adyen")
    assert note["repeats"] == 1  # stored once, the repeat counted
    await rig.fac()
    await asyncio.sleep(0.3)
    assert len(rig.cpo.state.facs) == 1 and site.row()["data"]["captured_minor"] == 595


async def test_a_lost_webhook_is_unconfirmed_at_the_deadline_and_a_late_one_decides(
    rigs: Open,
) -> None:
    rig = await rigs(frozenset({"lost"}), deadline=1.5)
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("capture_unconfirmed")
    assert row["data"]["captured_minor"] == 0 and row["data"]["owed_minor"] == 595
    overdue = site.daemon.store.acquirer.overdue(datetime.now(UTC))
    assert [m.modification.kind for m in overdue] == ["capture"]
    code, out = await rig.evpay("sessions", "list")
    assert code == 0 and "capture_unconfirmed" in out and "capture webhook missing since" in out
    code, out = await rig.evpay("reconcile")
    assert "missing_webhook" in out and f"missing_webhook:{row['id']}:capture:" in out, out
    assert not rig.cpo.state.facs  # never an outcome we do not know
    (capture,) = rig.captures()
    await post_webhook(rig, "CAPTURE", capture, success=True)  # late: still the evidence
    row = await site.wait_state("completed")
    assert row["data"]["captured_minor"] == 595
    fac = await rig.fac()
    assert fac["capture_status_code"] == "SUCCESS"


async def test_with_the_uplink_down_the_capture_waits_and_is_sent_once(rigs: Open) -> None:
    rig = await rigs(started=False)
    site = await rig.start()
    await rig.plug(site)
    await site.wait_state("capturing")
    await site.wait_modification("queued")
    async with asyncio.timeout(20):
        while not (m := site.modifications()[0]).last_error:
            await asyncio.sleep(0.05)
    assert m.status == "queued" and m.attempts >= 1  # tried, kept, visible
    code, out = await rig.evpay("sessions", "list")
    assert code == 0 and "capturing" in out and "acquirer: capture queued, not yet taken" in out
    await rig.adyen.start("127.0.0.1", rig.acq_port)  # the uplink is back
    row = await site.wait_state("completed")
    assert row["data"]["captured_minor"] == 595 and len(rig.captures()) == 1


async def test_killed_after_the_capture_is_stored_before_it_is_sent(rigs: Open) -> None:
    rig = await rigs(started=False)
    first = await rig.start()
    await rig.plug(first)
    await first.wait_modification("queued")
    await first.kill()
    await rig.adyen.start("127.0.0.1", rig.acq_port)
    second = await rig.start()
    row = await second.wait_state("completed")
    assert row["data"]["captured_minor"] == 595 and len(rig.captures()) == 1
    assert completions(rig.poi) == 0


async def test_killed_after_the_capture_was_sent_before_its_webhook(rigs: Open) -> None:
    """The acquirer applies the capture but its answer is lost; the daemon dies before the
    webhook (which comes late). After the restart the queued capture is sent again under the
    same Idempotency-Key: one capture at the acquirer, and the webhook completes the session."""
    rig = await rigs(frozenset({"slow", "response_lost"}), slow_s=6.0)
    first = await rig.start()
    await rig.plug(first)
    async with asyncio.timeout(20):
        while not rig.captures():
            await asyncio.sleep(0.05)
    await first.kill()
    second = await rig.start()
    row = await second.wait_state("completed")
    assert row["data"]["captured_minor"] == 595
    assert len(rig.captures()) == 1  # the same Idempotency-Key: applied once
    assert rig.adyen.state.dropped  # the first answer was indeed lost
    await rig.fac()
