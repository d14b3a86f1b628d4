"""Round-5 attack (issue 26), part 3: a refund still ``sent`` at a start, asked about with the
terminal's last result (payments/refund_resume.py), next to a capture of another session lost
at the same time. The engine host on a real SQLite store; the terminal's answers as its events
(the runtime rig is tests/zvt/test_refund_after_restart.py)."""

from __future__ import annotations

from pathlib import Path

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import HoldStatus
from gateway.payments.refund_resume import enquiry_key
from gateway.payments.refunds import RefundStatus
from gateway.payments.session import Session, State
from gateway.runtime.engine_host import EngineHost
from tests.acquirer.test_refund_after_restart import DEADLINE, webhook
from tests.acquirer.test_refund_after_restart import Rig as AcquirerRig
from tests.attack.round3_rig import MC, charge_at_host, make_host
from tests.payments.fixtures import Clock
from tests.payments.fixtures import terminal_result as res


def _refund_held(
    host: EngineHost, clock: Clock, sid: str, amount: int, held_ref: int | None
) -> c.RefundPayment:
    """A reversal of ``sid``'s capture asked (stored ``sent``); with ``held_ref``, the
    terminal's approval stored before our acknowledgement (then the daemon died)."""
    asked = e.RefundRequested(session_id=sid, event_id="r", amount_minor=amount, reason="fault")
    (cmd,) = [x for x in host.handle(asked).commands if isinstance(x, c.RefundPayment)]
    clock.advance(30)
    if held_ref is not None:
        host.handle(res(cmd.method, Outcome.APPROVED, amount, held_ref, sid=sid, provisional=True))
        clock.advance(30)
    return cmd


def _asked_at_start(host: EngineHost, sid: str, last: e.LastResult) -> Session:
    """The start's resume of ``sid`` and the terminal's answer: nothing open, ``last``."""
    before = host.load(sid)
    assert before is not None
    (ask,) = host.handle(e.Resumed(sid, "resume:b2")).commands
    assert isinstance(ask, c.QueryOpenPreauths)
    host.handle(e.OpenPreauthsReported(sid, f"{ask.key}:a", (), last=last))
    s = host.load(sid)
    assert s is not None
    return s


def test_a_refund_approval_echoing_the_captures_receipt_is_no_proof(tmp_path: Path) -> None:
    """A terminal that names the reversed payment's receipt (8) in the reversal's result: the
    approval stored before our acknowledgement says 8. The daemon died before acknowledging,
    so the terminal undid the reversal (ZVT 2.2.8) and its last result is the capture, 8,
    approved, same amount. That repeat is the capture's, not proof of the refund."""
    host, clock, store = make_host(tmp_path)
    try:
        done = charge_at_host(host, clock, "s1", 7, Outcome.APPROVED)
        assert done.state is State.COMPLETED and done.holds[0].booking_ref == "8"
        cmd = _refund_held(host, clock, "s1", done.captured_minor, held_ref=8)
        assert cmd.method == "reversal"
        capture_repeated = e.LastResult(approved=True, ref="8", amount_minor=done.captured_minor)
        s = _asked_at_start(host, "s1", capture_repeated)
        (refund,) = s.refunds
        assert refund.status is RefundStatus.UNKNOWN and s.refunded_minor == 0, refund
        assert not store.outbox.list(kind="session.refund", limit=10)
    finally:
        store.close()


def _s2_capturing(host: EngineHost, clock: Clock) -> None:
    """s2 on E2 at T1: hold 11 of 50.00, 2 kWh charged, its capture sent (state capturing)."""
    for ev in (
        e.CardPresented("s2", "card", "E2", "T1", "EUR"),
        res("preauthorize", Outcome.APPROVED, 5000, 11, sid="s2", card=MC),
        e.ChargerStarted("s2", "st", 1000),
        e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=3000),
    ):
        host.handle(ev)
        clock.advance(60)


def test_a_refunds_approval_is_not_another_sessions_lost_capture(tmp_path: Path) -> None:
    """s2's capture of 2.26 went out and its answer was lost; then s1's reversal of 2.26 went
    out, approved as receipt 20 (stored before our acknowledgement); the daemon died. The
    terminal's last result (20, approved, 2.26) is s1's refund: s2's enquiry must not book
    its capture on it (receipt 20 is a reversal's), while s1's refund is done on it."""
    host, clock, store = make_host(tmp_path)
    try:
        s1 = charge_at_host(host, clock, "s1", 7, Outcome.APPROVED)
        _s2_capturing(host, clock)
        s2 = host.load("s2")
        assert s2 is not None and s2.state is State.CAPTURING
        assert s2.holds[0].target_minor == s1.captured_minor  # the same price: the same amount
        _refund_held(host, clock, "s1", s1.captured_minor, held_ref=20)  # after s2's capture
        refund_approval = e.LastResult(approved=True, ref="20", amount_minor=s1.captured_minor)

        (ask,) = host.handle(e.Resumed("s2", "resume:b2")).commands  # CAPTURING: lost
        assert isinstance(ask, c.QueryOpenPreauths)
        host.handle(e.OpenPreauthsReported("s2", f"{ask.key}:a", (), last=refund_approval))
        after = host.load("s2")
        assert after is not None
        assert after.holds[0].booking_ref != "20", after.notes
        assert after.holds[0].status is HoldStatus.UNCONFIRMED, after.notes

        refunded = _asked_at_start(host, "s1", refund_approval)
        assert refunded.refunds[0].status is RefundStatus.DONE
        assert enquiry_key(refunded, refunded.refunds[0]).startswith("s1:refund-enquiry:")
    finally:
        store.close()


def test_a_refund_sent_without_approval_makes_the_last_result_no_ones(tmp_path: Path) -> None:
    """As above, but the crash came before s1's approval was stored: the terminal's last
    result (20) may be s1's reversal. s2 must not take it as its capture."""
    host, clock, store = make_host(tmp_path)
    try:
        s1 = charge_at_host(host, clock, "s1", 7, Outcome.APPROVED)
        _s2_capturing(host, clock)
        _refund_held(host, clock, "s1", s1.captured_minor, held_ref=None)
        last = e.LastResult(approved=True, ref="20", amount_minor=s1.captured_minor)
        (ask,) = host.handle(e.Resumed("s2", "resume:b2")).commands
        assert isinstance(ask, c.QueryOpenPreauths)
        host.handle(e.OpenPreauthsReported("s2", f"{ask.key}:a", (), last=last))
        after = host.load("s2")
        assert after is not None
        assert after.holds[0].booking_ref != "20", after.notes
        s = _asked_at_start(host, "s1", last)
        assert s.refunds[0].status is RefundStatus.UNKNOWN  # no stored approval: unknown
    finally:
        store.close()


async def test_an_acquirer_refund_whose_webhook_is_already_in_the_book_is_decided_once(
    tmp_path: Path,
) -> None:
    """The refund was taken by the acquirer and its REFUND webhook stored in the book, then the
    daemon died before handing it to the session. The restart hands it over under the same
    key: done once, no second modification, nothing asked again at a later start."""
    rig = AcquirerRig(tmp_path)
    try:
        await rig.completed()
        cmd = rig.refund_sent()
        await rig.runner().execute(cmd)  # the last run put it in the book, sent, taken
        rig.store.acquirer.received(cmd.key, "PSPREFUND", rig.clock(), rig.clock() + DEADLINE)
        hook = webhook("REFUND", "PSPREFUND", cmd.key, 100)
        rig.store.acquirer.record_events("adyen", [hook], rig.clock())
        runner = rig.runner()
        (again,) = await rig.resumed(runner, "b2")
        assert again.key == cmd.key
        runner.hand_over()
        s = rig.heard()
        assert s.refunds[0].status is RefundStatus.DONE and s.refunded_minor == 100
        stored = rig.store.acquirer.get(cmd.key)
        assert stored is not None and stored.attempts <= 1, stored
        assert not await rig.resumed(rig.runner(), "b3")
        (told,) = rig.store.outbox.list(kind="session.refund", limit=10)
        assert told.payload["amount_minor"] == 100
    finally:
        rig.store.close()


def test_two_restarts_in_a_row_ask_again_and_never_resend(tmp_path: Path) -> None:
    """The first start's enquiry is lost too (killed before its answer): the refund is still
    ``sent`` and the next start asks again -- an enquiry each time, never a second reversal --
    and the answer then decides it."""
    host, clock, store = make_host(tmp_path)
    try:
        done = charge_at_host(host, clock, "s1", 7, Outcome.APPROVED)
        _refund_held(host, clock, "s1", done.captured_minor, held_ref=20)
        first = host.handle(e.Resumed("s1", "resume:b2")).commands
        again = host.handle(e.Resumed("s1", "resume:b3")).commands
        for commands in (first, again):
            assert [type(x) for x in commands] == [c.QueryOpenPreauths]
        s = host.load("s1")
        assert s is not None and s.refunds[0].status is RefundStatus.SENT
        (rows,) = [store.sessions_refund_sent(10)]
        assert [r["id"] for r in rows] == ["s1"]  # listed at each start until decided
        last = e.LastResult(approved=True, ref="20", amount_minor=done.captured_minor)
        (ask,) = again
        assert isinstance(ask, c.QueryOpenPreauths)
        host.handle(e.OpenPreauthsReported("s1", f"{ask.key}:b", (), last=last))
        s = host.load("s1")
        assert s is not None and s.refunds[0].status is RefundStatus.DONE
        assert not store.sessions_refund_sent(10)
    finally:
        store.close()
