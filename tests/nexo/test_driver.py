"""NexoTerminal against the nexo POI simulator over real loopback HTTP (XML) and HTTPS with a
pinned, freshly made certificate (Adyen JSON, encrypted), for every simulator variant."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from drivers.base import Outcome, TerminalResult
from drivers.errors import DeviceUrlError
from drivers.money import Money
from drivers.nexo import messages as nm
from drivers.nexo.model import MessageCategory, PaymentType
from drivers.nexo.service_tracker import ServiceTracker
from drivers.nexo.wire import Encoding
from drivers.sim.nexo_poi import NexoPoi
from gateway.runtime import terminal_calls
from tests.nexo.conftest import MakeRig, receipt

EUR = "EUR"


def eur(minor: int) -> Money:
    return Money(minor, EUR)


def categories(poi: NexoPoi) -> list[str]:
    return [m.header.message_category.value for m in poi.requests]


async def test_reservation_top_up_and_lower_capture(make_rig: MakeRig, encoding: Encoding) -> None:
    rig = await make_rig(encoding)
    term = rig.terminal()
    assert (await term.connect()).approved
    pa = await term.preauthorize(eur(5000), "sess-1")
    assert pa.approved and pa.amount == eur(5000)
    tid, ts = pa.details["poi_transaction_id"], pa.details["poi_time_stamp"]
    assert pa.ref == f"{tid}@{ts}"  # the reference IS the POI transaction
    assert pa.details["poi_transaction_id"] and pa.card and pa.card.masked_pan == "541333****0010"
    top = await term.add_hold(receipt(pa), None, eur(1500), "sess-1")
    assert top.approved and top.amount == eur(1500) and top.ref == pa.ref
    cap = await term.capture(receipt(pa), eur(6500), eur(2345), "sess-1")
    assert cap.approved and cap.amount == eur(2345)
    assert rig.poi.booked() == Decimal("23.45") and rig.poi.open_reservations() == []
    eod = await term.end_of_day()
    assert eod.approved and [(t.brand, t.count, t.amount_minor) for t in eod.totals] == [
        ("mc", 1, 2345)
    ]
    types = [m.body.payment_type for m in rig.poi.requests if isinstance(m.body, nm.PaymentRequest)]
    assert types == [
        PaymentType.FIRST_RESERVATION,
        PaymentType.UPDATE_RESERVATION,
        PaymentType.COMPLETION,
    ]
    await term.close()


async def test_capture_above_the_hold_is_refused(make_rig: MakeRig) -> None:
    rig = await make_rig("xml")
    term = rig.terminal()
    pa = await term.preauthorize(eur(1000), "s")
    refused = await term.capture(receipt(pa), eur(1000), eur(1001), "s")
    assert refused.outcome is Outcome.ERROR and len(rig.poi.requests) == 1  # not even sent
    # exact: the hold may be bigger locally unknown; the POI itself refuses above its hold
    poi_refused = await term.capture(receipt(pa), eur(1000), eur(1001), "s", exact=True)
    assert (
        poi_refused.outcome is Outcome.ERROR
        and poi_refused.details["error_condition"] == "NotAllowed"
    )
    assert rig.poi.booked() == 0 and rig.poi.open_reservations() == ["T000001"]
    await term.close()


async def test_poi_without_reservations(make_rig: MakeRig, encoding: Encoding) -> None:
    rig = await make_rig(encoding, reservations=False)
    configured = rig.terminal(reservations=False)
    assert (await configured.preauthorize(eur(1000), "s")).outcome is Outcome.ERROR
    assert rig.poi.requests == []  # a capability the driver knows is never tried
    unaware = rig.terminal(reservations=True, state_path=rig.tmp / "other.json")
    res = await unaware.preauthorize(eur(1000), "s")
    assert res.outcome is Outcome.ERROR and res.details["error_condition"] == "UnavailableService"
    sale = await unaware.sale(eur(700))
    assert sale.approved and rig.poi.booked() == Decimal("7.00")
    await configured.close()
    await unaware.close()


async def test_partial_approval_books_what_the_poi_approved(
    make_rig: MakeRig, encoding: Encoding
) -> None:
    rig = await make_rig(encoding, partial_minor=3000)
    term = rig.terminal()
    pa = await term.preauthorize(eur(5000), "s")
    assert pa.approved and pa.amount == eur(3000) and pa.details["result"] == "Partial"
    await term.close()


async def test_lost_answer_after_the_poi_acted_is_asked_not_repeated(
    make_rig: MakeRig, encoding: Encoding
) -> None:
    rig = await make_rig(encoding, lose_answers=1)
    term = rig.terminal()
    stored: list[object] = []

    async def persist(result: TerminalResult) -> None:
        stored.append(result)

    pa = await term.preauthorize(eur(5000), "s", persist=persist)
    assert pa.approved and pa.amount == eur(5000) and stored == [pa]
    assert categories(rig.poi) == ["Payment", "TransactionStatus"]
    assert len(rig.poi.ledger) == 1  # one reservation: nothing was sent twice
    assert (await term.capture(receipt(pa), eur(5000), eur(100), "s")).approved
    await term.close()


async def test_in_progress_is_asked_again_later(make_rig: MakeRig, encoding: Encoding) -> None:
    rig = await make_rig(encoding, lose_answers=1, in_progress=2)
    term = rig.terminal()
    pa = await term.preauthorize(eur(5000), "s")
    assert pa.approved
    assert categories(rig.poi) == ["Payment"] + ["TransactionStatus"] * 3
    await term.close()


async def test_unknown_stays_unknown_and_blocks_until_asked(make_rig: MakeRig) -> None:
    rig = await make_rig("xml", lose_answers=1, in_progress=1000)
    term = rig.terminal()
    pa = await term.preauthorize(eur(5000), "s")
    assert pa.outcome is Outcome.UNKNOWN and pa.unreachable
    busy = await term.sale(eur(100))  # nothing new while a ServiceID is in doubt
    assert busy.outcome is Outcome.BUSY and len(rig.poi.ledger) == 1
    assert (await term.open_preauthorizations()).outcome is Outcome.BUSY  # no list in doubt
    rig.poi.config.in_progress = 0
    last = await term.last_result()
    assert last.approved and last.amount == eur(5000)
    assert (await term.sale(eur(100))).approved
    await term.close()


async def test_restart_asks_status_for_in_flight_service_first(
    make_rig: MakeRig, encoding: Encoding
) -> None:
    rig = await make_rig(encoding, lose_answers=1, in_progress=1000)
    first = rig.terminal()
    assert (await first.preauthorize(eur(4000), "s")).outcome is Outcome.UNKNOWN
    await first.close()  # the process dies here; only the state file survives
    state = json.loads((rig.tmp / "nexo-state.json").read_text())
    assert [f["category"] for f in state["tracker"]["in_flight"]] == ["Payment"]
    rig.poi.config.in_progress = 0
    before = len(rig.poi.requests)
    second = rig.terminal()
    assert (await second.status()).approved
    after = [m.header.message_category for m in rig.poi.requests[before:]]
    assert after[0] is MessageCategory.TRANSACTION_STATUS and after[1] is MessageCategory.DIAGNOSIS
    last = await second.last_result()
    assert last.approved and last.amount == eur(4000) and last.ref is not None
    # the recovered reservation has a next action: it can be captured
    cap = await second.capture(receipt(last), eur(4000), eur(1000), "s")
    assert cap.approved and rig.poi.booked() == Decimal("10.00")
    await second.close()


async def test_not_found_means_it_never_took_effect(make_rig: MakeRig, encoding: Encoding) -> None:
    rig = await make_rig(encoding)
    tracker = ServiceTracker()
    sid = tracker.new_service_id()
    tracker.store(sid, MessageCategory.PAYMENT, "<stored, then the process died>")
    (rig.tmp / "nexo-state.json").write_text(
        json.dumps({"tracker": tracker.snapshot(), "handles": {}})
    )
    term = rig.terminal()
    last = await term.last_result()
    assert last.outcome is Outcome.ERROR and "never took effect" in last.message
    assert len(rig.poi.ledger) == 0
    assert categories(rig.poi) == ["TransactionStatus"]
    assert (await term.sale(eur(100))).approved
    await term.close()


async def test_busy_poi_does_nothing(make_rig: MakeRig, encoding: Encoding) -> None:
    rig = await make_rig(encoding, busy=1)
    term = rig.terminal()
    res = await term.preauthorize(eur(1000), "s")
    assert res.outcome is Outcome.BUSY and rig.poi.ledger == {}
    assert (await term.preauthorize(eur(1000), "s")).approved
    await term.close()


async def test_slow_poi_answer_is_recovered_by_status(make_rig: MakeRig) -> None:
    rig = await make_rig("xml", delay_s=0.6)
    term = rig.terminal(timeout_s=0.3, quick_timeout_s=2.0)
    rig.poi.config.delay_s = 0.6
    res = await term.sale(eur(1234))
    # the sale timed out; TransactionStatus (also slow, but within its own deadline) told us
    assert res.approved and res.amount == eur(1234) and len(rig.poi.ledger) == 1
    await term.close()


async def test_poi_refusing_reversal_of_open_reservation(
    make_rig: MakeRig, encoding: Encoding
) -> None:
    rig = await make_rig(encoding, refuse_open_reversal=True)
    term = rig.terminal(release_open=False)
    pa = await term.preauthorize(eur(3000), "s")
    rel = await term.release(receipt(pa), eur(3000))
    assert rel.outcome is Outcome.ERROR and rel.details["error_condition"] == "NotAllowed"
    # Adyen's POI names it tenderReference.pspReference; the pspReference is in the answer
    assert [tid.split(".")[0] for tid in rig.poi.open_reservations()] == ["T000001"]
    psp = pa.details.get("psp_reference")
    assert psp == ("8816000000000001" if encoding == "adyen-json" else None)
    assert (await term.capture(receipt(pa), eur(3000), eur(1), "s")).approved
    await term.close()


async def test_release_and_unknown_reference(make_rig: MakeRig, encoding: Encoding) -> None:
    rig = await make_rig(encoding)
    term = rig.terminal()
    pa = await term.preauthorize(eur(3000), "s")
    rel = await term.release(receipt(pa), eur(3000))
    assert rel.approved and rel.amount == eur(3000) and rig.poi.open_reservations() == []
    assert (await term.release("99", eur(1))).outcome is Outcome.ERROR
    await term.close()


async def test_refund_read_card_display_print(make_rig: MakeRig, encoding: Encoding) -> None:
    rig = await make_rig(encoding)
    term = rig.terminal()
    assert (await term.sale(eur(1000))).approved
    assert (await term.refund(eur(400))).approved
    assert rig.poi.booked() == Decimal("6.00")
    card = await term.read_card(5)
    assert card.approved and card.card and card.card.brand == "mc"
    assert (await term.display(["Tap card", "to start"], 5)).approved
    assert (await term.print_text(["EVPAY", "12.34 EUR"])).approved
    pa = await term.preauthorize(eur(2000), "s")
    listed = await term.open_preauthorizations()
    assert listed.approved and listed.open_refs == (pa.ref,)
    assert [tid.split(".")[0] for tid in rig.poi.open_reservations()] == ["T000004"]  # agrees
    await term.capture(receipt(pa), eur(2000), eur(2000), "s")
    assert (await term.open_preauthorizations()).open_refs == ()
    await term.close()


async def test_https_pin_and_key_are_enforced(make_rig: MakeRig) -> None:
    rig = await make_rig("adyen-json")
    wrong_pin = rig.terminal(pinned_sha256=b"\x00" * 32)
    res = await wrong_pin.status()
    assert res.outcome is Outcome.ERROR and res.unreachable and rig.poi.requests == []
    await wrong_pin.close()
    with pytest.raises(DeviceUrlError):
        rig.terminal(pinned_sha256=None)
    from drivers.nexo.adyen_crypto import AdyenKey

    wrong_key = rig.terminal(key=AdyenKey("EvpayTestKey", 1, "another passphrase"))
    assert (await wrong_key.status()).outcome is Outcome.ERROR and rig.poi.requests == []
    await wrong_key.close()


async def test_abort_names_the_service_in_flight(make_rig: MakeRig) -> None:
    rig = await make_rig("xml", delay_s=0.5)
    term = rig.terminal()
    assert (await term.abort()).outcome is Outcome.ERROR  # nothing in flight
    sale = asyncio.create_task(term.sale(eur(100)))
    await asyncio.sleep(0.1)
    assert (await term.abort()).approved
    await sale
    aborts = [m.body for m in rig.poi.requests if isinstance(m.body, nm.AbortRequest)]
    payment = next(m for m in rig.poi.requests if isinstance(m.body, nm.PaymentRequest))
    assert len(aborts) == 1 and aborts[0].message_reference.service_id == payment.header.service_id


async def test_handles_are_never_reused_across_restarts(make_rig: MakeRig) -> None:
    rig = await make_rig("xml")
    first = rig.terminal()
    a = await first.sale(eur(100))
    await first.close()
    second = rig.terminal()
    b = await second.sale(eur(100))
    assert a.ref and b.ref and a.ref != b.ref
    assert (await second.reverse(receipt(a))).approved  # the first process's hold still works


async def test_a_reversal_recovered_after_a_restart_closes_its_hold(
    make_rig: MakeRig, encoding: Encoding
) -> None:
    """Found by the crash campaign on nexo: a daemon killed while the POI reversed a reservation
    recovered the Reversal's answer by TransactionStatus, but that answer names no reservation,
    so the hold stayed open in the driver's ledger and every Reversal again was NotFound."""
    rig = await make_rig(encoding)
    first = rig.terminal()
    pa = await first.preauthorize(eur(4000), "s")
    assert pa.approved
    rig.poi.config.lose_answers, rig.poi.config.in_progress = 1, 1000
    assert (await first.release(receipt(pa), eur(4000))).outcome is Outcome.UNKNOWN
    await first.close()  # the process dies; the POI has reversed the reservation
    rig.poi.config.in_progress = 0
    second = rig.terminal()
    last = await second.last_result()
    assert last.approved and last.ref == pa.ref, last
    assert rig.poi.open_reservations() == []
    listed = await second.open_preauthorizations()
    assert listed.approved and listed.open_refs == (), listed
    await second.close()


async def test_a_recovered_approval_is_evidence_for_the_engine(make_rig: MakeRig) -> None:
    """Found by the crash campaign on nexo: the engine took a last result without a ZVT result
    code for no evidence, so every capture a kill interrupted ended capture_unconfirmed although
    TransactionStatus had told the driver exactly what the POI booked."""
    rig = await make_rig("xml", lose_answers=1, in_progress=1000)
    first = rig.terminal()
    assert (await first.preauthorize(eur(4000), "s")).outcome is Outcome.UNKNOWN
    await first.close()  # the process dies; the POI made the reservation
    rig.poi.config.in_progress = 0
    last = await terminal_calls.last_result(rig.terminal())
    assert last is not None and last.approved and last.amount_minor == 4000, last
    assert last.ref is not None
