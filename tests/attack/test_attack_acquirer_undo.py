"""Adversarial probes against "Merge acq-fix" (issue 29), written by a session that did not write
it (attack-acq2): CAPTURE_FAILED after a booked CAPTURE (``payments/capture_undone.py``, what
``runtime/acquirer_outcomes.py`` makes of a settled modification), the corrected FAC, the cancel
by merchant reference of a lost pre-auth, and the online orphan sweep.

Sans-I/O where the decision is pure (the engine and ``outcome_events``), a real SQLite store
where the book decides. A probe that holds stays as a guard."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.money import Money
from drivers.nexo.asyncio.client import NexoClient
from drivers.nexo.asyncio.terminal import NexoTerminal
from gateway.acquirer.port import Modification, ModificationEvent
from gateway.ocpi.fac import fac_from_outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import HoldStatus, Session, sale_reference
from gateway.payments.refunds import Refund, RefundMethod, RefundStatus
from gateway.payments.session import State, transition, violations
from gateway.runtime.acquirer_outcomes import outcome_events
from gateway.runtime.acquirer_runner import AcquirerRunner
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.online_orphans import online_orphans
from gateway.store import Store
from gateway.store.acquirer import StoredModification
from tests.acquirer import test_e2e_acquirer as e2e
from tests.acquirer.rig import API_KEY, HMAC_KEY
from tests.acquirer.test_online_sweep import Poi, ref
from tests.payments.fixtures import T0, Clock, card_and_preauth, policy
from tests.payments.test_session import completed

SID = "s1"
ONLINE = policy(online_deadlines={"T1": timedelta(seconds=60)})
REF = "TX.8815000000000001@2026-12-07T12:00:00"
rigs = e2e.rigs  # the real daemon, nexo POI, simulated Adyen and CPO on loopback


def settled(key: str, status: str, amount: int, reason: str | None = None) -> StoredModification:
    """A capture modification as the book returns it once its webhook came."""
    return StoredModification(
        modification=Modification(
            key,
            "capture",
            "8815000000000001",
            amount=Money(amount, "EUR"),
            authorised=Money(9000, "EUR"),
        ),
        acquirer="adyen",
        status=status,
        acquirer_reference="8816000000000777",
        created_at=T0,
        attempts=1,
        last_error=None,
        deadline=T0 + timedelta(minutes=1),
        settled_at=T0 + timedelta(minutes=1),
        outcome_reason=reason,
    )


def two_holds_one_unconfirmed() -> Session:
    """A session whose first hold's capture was booked (its CAPTURE webhook came) and whose
    second hold's capture has no evidence either way: capture_unconfirmed, its outcome waiting
    for the evidence about the second hold."""
    done = completed()
    first = done.holds[0]
    second = replace(
        first,
        ref="h2",
        amount_minor=1500,
        target_minor=700,
        captured_minor=0,
        released_minor=0,
        booking_ref=None,
        status=HoldStatus.UNCONFIRMED,
        capture_sent_at=T0 + timedelta(hours=1),
    )
    return replace(done, holds=(first, second), state=State.CAPTURE_UNCONFIRMED)


def test_the_first_holds_confirmed_capture_is_no_evidence_for_the_unconfirmed_second() -> None:
    """A restart offers every settled modification in the lookback again (``hand_over``): the
    first hold's CAPTURE, already booked, must not decide the second hold's unknown capture."""
    s = two_holds_one_unconfirmed()
    first = s.holds[0]
    m = settled(f"{SID}:capture:{first.ref}", "confirmed", first.captured_minor)
    assert not [x for x in outcome_events(m, s) if isinstance(x, e.CaptureEvidence)]


def test_a_capture_failed_of_the_booked_hold_is_undone_never_evidence_for_the_other() -> None:
    """CAPTURE_FAILED for the first (booked) hold of a capture_unconfirmed session: that hold's
    booking is undone; the second hold's unknown capture is not decided by it (it would be
    marked lapsed, uncaptured, on no evidence about it)."""
    s = two_holds_one_unconfirmed()
    first = s.holds[0]
    m = settled(f"{SID}:capture:{first.ref}", "failed", first.captured_minor, "Capture failed")
    events = outcome_events(m, s)
    assert not [x for x in events if isinstance(x, e.CaptureEvidence)], events
    (undo,) = [x for x in events if isinstance(x, e.CaptureUndone)]
    assert undo.ref == first.ref
    t = transition(s, undo, T0 + timedelta(hours=2), ONLINE)
    after = t.session
    assert after is not None and after.state is State.CAPTURE_UNCONFIRMED
    assert after.holds[1].status is HoldStatus.UNCONFIRMED  # still waiting for its evidence
    assert after.captured_minor == 0 and not t.commands  # no FAC before the evidence


def two_holds_booked() -> Session:
    done = completed()
    first = done.holds[0]
    second = replace(
        first,
        ref="h2",
        amount_minor=1500,
        captured_minor=500,
        released_minor=1000,
        booking_ref="b2",
        target_minor=500,
    )
    return replace(done, holds=(first, second))


def test_two_failed_captures_never_send_two_facs_with_one_id() -> None:
    """Was a BREAK: both corrections were named <session>-C. FACs are POSTed once and an
    "already exists" answer is taken as success (docs/OCPI-PAYMENTS.md), so the second
    correction was swallowed by the CPO and our own GET list showed two objects with one id."""
    s = two_holds_booked()
    ids = []
    for n, hold in enumerate(s.holds):
        undo = e.CaptureUndone(session_id=SID, event_id=f"u{n}", ref=hold.ref, detail="failed")
        t = transition(s, undo, T0 + timedelta(hours=2 + n), ONLINE)
        assert t.session is not None
        s = t.session
        for cmd in t.commands:
            if isinstance(cmd, c.Enqueue):
                fac = fac_from_outcome(cmd.payload, T0)
                assert fac is not None
                ids.append(fac.id)
    assert s.captured_minor == 0 and not violations(s)
    assert len(ids) == len(set(ids)) == 2 and ids[0] == f"{SID}-C", ids
    assert all(len(i) <= 36 for i in ids)


def test_a_capture_undone_after_a_refund_owes_what_the_customer_kept() -> None:
    """A refund was given back (REFUND webhook, done) from a capture the acquirer then reports
    failed: the customer keeps the refund and paid nothing. The undoing must still apply (never
    an invariant error that leaves the CAPTURE_FAILED unapplied for ever), the debt is the
    whole capture (the price plus what was given back), and nothing more can be refunded."""
    done = completed()
    hold = done.holds[0]
    given = Refund(
        id="r1",
        amount_minor=100,
        reason="corrected CDR",
        source="cdr",
        method=RefundMethod.ACQUIRER,
        status=RefundStatus.DONE,
        at=T0 + timedelta(hours=1),
    )
    refunded = replace(done, refunds=(given,))
    assert not violations(refunded)
    undo = e.CaptureUndone(session_id=SID, event_id="u", ref=hold.ref, detail="CAPTURE_FAILED")
    s = transition(refunded, undo, T0 + timedelta(hours=2), ONLINE).session
    assert s is not None and s.state is State.CAPTURE_FAILED
    assert s.captured_minor == 0 and s.refundable_minor <= 0
    assert s.bill.owed_minor >= done.bill.owed_minor + hold.captured_minor


def test_a_cancel_by_reference_that_finds_nothing_still_ends_within_the_hold_validity() -> None:
    """The POI never made the hold: Adyen's cancel by merchant reference answers failure
    (TECHNICAL_CANCEL success=false) every time. The session keeps a next action and a
    deadline, and ends no later than the hold's validity, never open for ever."""
    started = transition(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), T0, ONLINE)
    assert started.session is not None
    lost = e.TerminalResultArrived(
        session_id=SID, event_id="r", operation=e.Operation.PREAUTHORIZE, outcome=Outcome.UNKNOWN
    )
    s = transition(started.session, lost, T0, ONLINE).session
    assert s is not None
    t = transition(s, e.OpenPreauthsReported(SID, "q", (), last=None), T0, ONLINE)
    s = t.session
    assert s is not None and s.state is State.RELEASING
    cancel = next(x for x in t.commands if isinstance(x, c.Release))
    now = T0
    for n in range(500):
        if s.final:
            break
        assert s.timer is not None and s.next_deadline is not None, (s.state, s.notes)
        assert s.expires_at is not None and s.timer[1] <= s.expires_at + timedelta(days=1)
        state = State(s.state)  # not the narrowed literal of the assert above
        if state is State.RELEASING:  # its webhook within the minute
            now += timedelta(minutes=1)
            ev: e.Event = e.TerminalResultArrived(
                session_id=SID,
                event_id=f"w{n}",
                operation=e.Operation.RELEASE,
                outcome=Outcome.DECLINED,
                for_ref=cancel.ref,
                message="acquirer: TECHNICAL_CANCEL failed (no payment found)",
            )
        elif state is State.RELEASE_UNKNOWN:  # the POI's ledger: ours still listed
            now += timedelta(minutes=1)
            ev = e.OpenPreauthsReported(SID, f"q{n}", (cancel.ref,))
        else:
            now = max(now, s.timer[1])
            ev = e.TimerFired(SID, f"t{n}", s.timer[0])
        t = transition(s, ev, now, ONLINE)
        assert t.session is not None
        s = t.session
    assert s.final, (s.state, s.notes[-3:])
    assert now <= T0 + ONLINE.validity.default + timedelta(days=1)
    assert not violations(s)


def test_two_sessions_on_one_terminal_cancel_by_distinct_merchant_references() -> None:
    """Session ids are uuid4 hex: their sale references (16 hex digits) differ, so a cancel by
    our reference names only its own session's payment."""
    import uuid

    refs = {sale_reference(uuid.uuid4().hex) for _ in range(1000)}
    assert len(refs) == 1000


def test_a_capture_failed_for_another_amount_settles_the_failure_by_its_reference(
    tmp_path: Path,
) -> None:
    """CAPTURE_FAILED names the capture's pspReference but another amount: the book takes any
    failure report as the capture's outcome (``_fits``). Recorded here as the behaviour: a
    failure is never booked money, so it may overturn the success (a debt shown, never money
    counted that we do not have)."""
    clock = Clock()
    store = Store.open(tmp_path / "a.sqlite3", clock=clock)
    key = f"{SID}:capture:h1"
    store.acquirer.enqueue(
        "adyen",
        Modification(
            key,
            "capture",
            "8815000000000001",
            amount=Money(595, "EUR"),
            authorised=Money(5000, "EUR"),
        ),
        clock(),
    )
    store.acquirer.received(key, "8816000000000777", clock(), clock() + timedelta(minutes=1))

    def ev(code: str, amount: int, success: bool) -> ModificationEvent:
        return ModificationEvent(
            event=code,
            psp_reference="8816000000000777",
            original_reference="8815000000000001",
            merchant_reference=key,
            merchant_account="EVPayTest",
            success=success,
            amount=Money(amount, "EUR"),
            reason="" if success else "Capture failed",
            event_date="2026-12-07T12:00:00+01:00",
            live=False,
        )

    store.acquirer.record_events("adyen", [ev("CAPTURE", 595, True)], clock())
    got = store.acquirer.get(key)
    assert got is not None and got.status == "confirmed"
    store.acquirer.record_events("adyen", [ev("CAPTURE_FAILED", 1, False)], clock())
    got = store.acquirer.get(key)
    assert got is not None and got.status == "failed"
    store.close()


def booked_online(store: Store, clock: Clock) -> tuple[EngineHost, c.Capture]:
    """A session on an online terminal whose capture was booked (its CAPTURE webhook's result
    handed to the engine), in a real SQLite store."""
    host = EngineHost(store, ONLINE, clock)
    card_and_preauth(host.handle, SID, REF)
    host.handle(e.ChargerStarted(SID, "st", 1000))
    stopped = host.handle(e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=5000))
    (capture,) = [x for x in stopped.commands if isinstance(x, c.Capture)]
    clock.advance(60)
    host.handle(
        e.TerminalResultArrived(
            session_id=SID,
            event_id="acquirer:capture:confirmed",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=capture.amount_minor,
            for_ref=REF,
            message="acquirer: confirmed",
        )
    )
    s = host.load(SID)
    assert s is not None and s.state is State.COMPLETED, s and s.notes
    return host, capture


def test_capture_failed_while_a_refund_is_in_flight_is_applied(tmp_path: Path) -> None:
    """CAPTURE_FAILED while an acquirer refund of that capture is in flight: applied (never an
    invariant error escaping ``EngineWorker._process_queued`` and offered again after each
    restart), the booking kept with a discrepancy for a person (refunds were given from it)."""
    clock = Clock()
    store = Store.open(tmp_path / "r.sqlite3", clock=clock)
    host, _ = booked_online(store, clock)
    asked = host.handle(
        e.RefundRequested(session_id=SID, event_id="rf1", amount_minor=100, reason="cdr")
    )
    assert [x for x in asked.commands if isinstance(x, c.RefundPayment)]  # sent
    assert asked.applied
    s = host.load(SID)
    assert s is not None and s.refunds and s.refunds[0].pending, s and s.notes
    clock.advance(60)
    undo = e.CaptureUndone(session_id=SID, event_id="u", ref=REF, detail="CAPTURE_FAILED")
    try:  # was a BREAK: InvariantViolated ('refunds > captured') out of EngineHost.handle
        assert host.handle(undo).applied
        s = host.load(SID)
        assert s is not None and any("not undone: refunds of 100" in d for d in s.discrepancies)
        assert not violations(s)
        again = host.handle(replace(undo, event_id="u2"))  # a restart offers it again
        assert again.session == s
    finally:
        store.close()


def test_a_capture_undone_after_its_refund_is_owed_listed_and_corrected(tmp_path: Path) -> None:
    """A refund of the capture done (the acquirer's REFUND result), then CAPTURE_FAILED, in a
    real store: the session is capture_failed and owes the whole capture, the refund stays
    recorded as refunded (the part given from money never received is named), ``evpay sessions
    --owing`` lists it, a person reads why, and the CPO's corrected FAC is queued."""
    clock = Clock()
    store = Store.open(tmp_path / "d.sqlite3", clock=clock)
    host, capture = booked_online(store, clock)
    try:
        host.handle(
            e.RefundRequested(session_id=SID, event_id="rf1", amount_minor=100, reason="cdr")
        )
        s = host.load(SID)
        assert s is not None and s.refunds[0].pending
        paid = e.TerminalResultArrived(
            session_id=SID,
            event_id="acquirer:refund:done",
            operation=e.Operation.REFUND,
            outcome=Outcome.APPROVED,
            amount_minor=100,
            refund_id=s.refunds[0].id,
        )
        assert host.handle(paid).applied
        s = host.load(SID)
        assert s is not None and s.refunded_minor == 100 and not s.refunds[0].pending, s and s.notes
        clock.advance(60)
        undo = e.CaptureUndone(session_id=SID, event_id="u", ref=REF, detail="CAPTURE_FAILED")
        assert host.handle(undo).applied
        s = host.load(SID)
        assert s is not None and s.state is State.CAPTURE_FAILED, s and s.notes
        assert s.captured_minor == 0 and s.refunded_minor == 100
        assert s.bill.owed_minor == capture.amount_minor
        assert s.bill.refunded_before_undo_minor == 100 and not violations(s)
        assert any("money never received" in d for d in s.discrepancies), s.discrepancies
        assert [r["id"] for r in store.sessions(owing=True)] == [SID]
        sent = [m.message_id for m in store.outbox.list(kind="session.outcome")]
        assert f"{SID}:undone:{REF}" in sent, sent
        over = violations(replace(s, bill=replace(s.bill, refunded_before_undo_minor=99)))
        assert over, "only the refunds given before the undo may stand above the capture"
    finally:
        store.close()


def test_no_refund_is_sent_from_a_capture_the_acquirer_undid(tmp_path: Path) -> None:
    """After the undoing the session holds no captured money: a refund asked then (a corrected
    CDR, a technician) is refused with a reason, never sent to the acquirer."""
    clock = Clock()
    store = Store.open(tmp_path / "n.sqlite3", clock=clock)
    host, capture = booked_online(store, clock)
    undo = e.CaptureUndone(session_id=SID, event_id="u", ref=REF, detail="CAPTURE_FAILED")
    assert host.handle(undo).applied
    asked = host.handle(
        e.RefundRequested(
            session_id=SID, event_id="rf1", amount_minor=100, reason="cdr", acquirer=True
        )
    )
    assert not [x for x in asked.commands if isinstance(x, c.RefundPayment)], asked.commands
    s = host.load(SID)
    assert s is not None and s.state is State.CAPTURE_FAILED
    assert not [r for r in s.refunds if r.pending or r.status.value == "done"]
    assert s.bill.owed_minor == capture.amount_minor
    store.close()


async def test_a_duplicated_capture_failed_is_undone_once(rigs: e2e.Open) -> None:
    """The simulator's CAPTURE then CAPTURE_FAILED, each sent twice (Adyen retries): the
    booking is undone once, the debt is the price once, one discrepancy, one correction."""
    rig = await rigs(frozenset({"capture_failed", "duplicate"}))
    site = await rig.start()
    await rig.plug(site)
    await site.wait_state("completed", "capture_failed")
    await rig.adyen.settle()
    row = await site.wait_state("capture_failed")
    data = row["data"]
    assert data["captured_minor"] == 0 and data["owed_minor"] == 595, data["notes"]
    assert len([d for d in data["discrepancies"] if "undone" in d]) == 1, data["discrepancies"]
    sid = row["id"]
    async with asyncio.timeout(15):
        while f"{sid[:34]}-C" not in rig.cpo.state.facs:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    corrections = list(site.daemon.store.outbox.list(kind="session.outcome"))
    assert [m.message_id for m in corrections].count(f"{sid}:undone:{data['holds'][0]['ref']}") == 1
    assert len(corrections) == 2, [m.message_id for m in corrections]


async def test_a_hold_captured_online_leaves_the_poi_ledgers_open_list(rigs: e2e.Open) -> None:
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed")
    ref = row["data"]["holds"][0]["ref"]
    terminal = site.daemon.terminals["a1"]
    assert isinstance(terminal, NexoTerminal)
    assert terminal.client.handles.get(ref, {}).get("state") == "completed", terminal.client.handles
    assert terminal.options.state_path is not None
    reloaded = NexoClient(terminal.options)  # a restart reads the state file: still closed
    assert reloaded.handles[ref]["state"] == "completed"
    assert ref not in (await terminal.open_preauthorizations()).open_refs


def adyen_event(
    code: str, psp: str, original: str | None, merchant_ref: str, *, success: bool = True
) -> ModificationEvent:
    return ModificationEvent(
        event=code,
        psp_reference=psp,
        original_reference=original,
        merchant_reference=merchant_ref,
        merchant_account="EVPayTest",
        success=success,
        amount=None,
        reason="" if success else "Payment not found",
        event_date="2026-12-07T12:00:00+01:00",
        live=False,
    )


async def test_a_hold_cancelled_by_our_reference_is_no_orphan_after_its_session_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lost pre-auth cancelled by our merchant reference: the session is voided on the
    TECHNICAL_CANCEL (its originalReference names the POI's payment, as Adyen sends it). The
    POI's ledger still lists that payment, which no session knows by its own reference: the
    online sweep must not make it an orphan (a second cancel, an orphan session) once the
    session has ended. The warnings logged carry no API key, HMAC key or card data."""
    clock = Clock()
    store = Store.open(tmp_path / "c.sqlite3", clock=clock)
    host = EngineHost(store, ONLINE, clock)
    sid = "s-lost-0123456789"
    card_and_preauth(host.handle, sid, outcome=Outcome.UNKNOWN, event_id="lost")
    done = host.handle(e.OpenPreauthsReported(sid, "q", ()))
    (cancel,) = [x for x in done.commands if isinstance(x, c.Release)]
    taken: list[e.Event] = []
    runner = AcquirerRunner(
        host=host,
        routes={"T1": "adyen"},
        acquirers={},
        take=taken.append,
        references=lambda _t, r: Poi.payment_reference(r),
    )
    await runner.execute(cancel)
    store.acquirer.received(cancel.key, "8816000000000900", clock(), clock() + timedelta(60))
    payment = "8815000000000004"
    store.acquirer.record_events(
        "adyen", [adyen_event("TECHNICAL_CANCEL", "8816000000000900", payment, cancel.key)], clock()
    )
    with caplog.at_level(logging.INFO):
        runner.hand_over()
    for x in taken:
        host.handle(x)
    s = host.load(sid)
    assert s is not None and s.state is State.VOIDED, s and s.notes
    assert online_orphans(host, "T1", (ref(4),), Poi()) == ()
    said = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert API_KEY not in said and HMAC_KEY not in said
    store.close()
