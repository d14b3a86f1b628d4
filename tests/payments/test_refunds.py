"""Refunds of a completed session, pure: the method follows the terminal's batch, a refund
never exceeds what was captured, a refused or failed one moves no money, a corrected price
refunds the difference."""

from __future__ import annotations

from datetime import timedelta

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.refunds import RefundMethod, RefundStatus
from gateway.payments.session import Session, State, Transition, transition
from tests.payments.fixtures import T0, policy

P = policy()
SID = "s1"


def run(s: Session | None, ev: e.Event, minutes: float = 0) -> Transition:
    return transition(s, ev, T0 + timedelta(minutes=minutes), P)


def completed() -> Session:
    s = run(None, e.CardPresented(SID, "card", "E1", "T1", "EUR")).session
    s = run(
        s,
        e.TerminalResultArrived(
            session_id=SID,
            event_id="pa",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref="7",
        ),
    ).session
    s = run(s, e.ChargerStarted(SID, "st", 1000), 1).session
    s = run(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5000), 60).session
    s = run(
        s,
        e.TerminalResultArrived(
            session_id=SID,
            event_id="cap",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=333,
            ref="8",
            for_ref="7",
        ),
        61,
    ).session
    assert s is not None and s.state is State.COMPLETED and s.captured_minor == 333
    return s


def result(
    op: str, outcome: Outcome, amount: int | None, receipt: int | None = 9
) -> e.TerminalResultArrived:
    return e.TerminalResultArrived(
        session_id=SID,
        event_id=f"r-{op}-{outcome}",
        operation=e.Operation(op),
        outcome=outcome,
        amount_minor=amount,
        ref=None if receipt is None else str(receipt),
    )


def test_the_whole_capture_while_the_day_is_open_is_a_reversal_of_its_booking() -> None:
    t = run(
        completed(),
        e.RefundRequested(
            session_id=SID, event_id="refund-a", amount_minor=333, reason="charger fault"
        ),
        90,
    )
    (cmd,) = t.commands
    assert isinstance(cmd, c.RefundPayment) and cmd.method == "reversal" and cmd.ref == "8"
    s = t.session
    assert s is not None and s.refunds[0].status is RefundStatus.SENT and s.refunded_minor == 0
    t = run(s, result("reversal", Outcome.APPROVED, 333), 91)
    s = t.session
    assert s is not None and s.refunded_minor == 333 and s.refunds[0].ref == "9"
    (message,) = t.commands
    assert isinstance(message, c.Enqueue) and message.kind == "session.refund"
    assert message.payload["amount_minor"] == 333 and message.payload["method"] == "reversal"
    assert (
        run(s, result("reversal", Outcome.APPROVED, 333), 92).commands == ()
    )  # a repeat changes nothing


def test_part_of_it_or_after_the_end_of_day_is_a_refund() -> None:
    part = run(
        completed(),
        e.RefundRequested(session_id=SID, event_id="refund-p", amount_minor=100, reason="goodwill"),
        90,
    )
    assert isinstance(part.commands[0], c.RefundPayment) and part.commands[0].method == "refund"
    closed = run(
        completed(),
        e.RefundRequested(
            session_id=SID, event_id="refund-c", amount_minor=333, reason="fault", day_closed=True
        ),
        90,
    )
    cmd = closed.commands[0]
    assert isinstance(cmd, c.RefundPayment) and cmd.method == "refund" and cmd.ref is None


def test_without_card_present_refunds_a_refund_after_the_end_of_day_is_refused_visibly() -> None:
    """card_present_refunds defaults to false (issue 29: a card-present refund only when
    configured): the request is kept as refused with the reason, and nothing is sent."""
    for event_id, amount, closed in (("late", 333, True), ("part", 100, False)):
        t = run(
            completed(),
            e.RefundRequested(
                session_id=SID,
                event_id=event_id,
                amount_minor=amount,
                reason="fault",
                day_closed=closed,
                card_present=False,
            ),
            90,
        )
        assert t.session is not None and not t.commands
        (refund,) = t.session.refunds
        assert refund.status == "refused" and "back office" in refund.message


def test_a_refund_never_exceeds_what_was_captured() -> None:
    s: Session | None = completed()
    t = run(
        s, e.RefundRequested(session_id=SID, event_id="too-much", amount_minor=334, reason="x"), 90
    )
    assert t.commands == () and t.session is not None
    (refused,) = t.session.refunds
    assert refused.status is RefundStatus.REFUSED and "more than the 3.33 EUR" in refused.message
    s = run(
        s, e.RefundRequested(session_id=SID, event_id="a", amount_minor=200, reason="x"), 90
    ).session
    s = run(s, result("refund", Outcome.APPROVED, 200), 91).session
    t = run(s, e.RefundRequested(session_id=SID, event_id="b", amount_minor=200, reason="x"), 92)
    assert t.session is not None
    assert t.commands == () and "more than the 1.33 EUR" in t.session.refunds[-1].message
    t = run(
        t.session, e.RefundRequested(session_id=SID, event_id="c", amount_minor=133, reason="x"), 93
    )
    assert (
        t.commands and t.session is not None and t.session.refunds[-1].method is RefundMethod.REFUND
    )


def test_one_refund_at_a_time_and_a_declined_one_moves_no_money() -> None:
    s = run(
        completed(),
        e.RefundRequested(session_id=SID, event_id="a", amount_minor=100, reason="x"),
        90,
    ).session
    busy = run(s, e.RefundRequested(session_id=SID, event_id="b", amount_minor=100, reason="x"), 90)
    assert busy.session is not None
    assert busy.commands == () and "not settled yet" in busy.session.refunds[-1].message
    s = run(s, result("refund", Outcome.DECLINED, None), 91).session
    assert s is not None and s.refunds[0].status is RefundStatus.FAILED and s.refunded_minor == 0
    unknown = run(
        run(
            s, e.RefundRequested(session_id=SID, event_id="c", amount_minor=100, reason="x"), 92
        ).session,
        result("refund", Outcome.UNKNOWN, None),
    )
    assert (
        unknown.session is not None and unknown.session.refunds[-1].status is RefundStatus.UNKNOWN
    )


def test_only_a_completed_session_is_refunded() -> None:
    s = run(None, e.CardPresented(SID, "card", "E1", "T1", "EUR")).session
    s = run(
        s,
        e.TerminalResultArrived(
            session_id=SID,
            event_id="pa",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref="7",
        ),
    ).session
    t = run(s, e.RefundRequested(session_id=SID, event_id="a", amount_minor=100, reason="x"), 90)
    assert t.session is not None
    assert t.commands == () and "only a completed session" in t.session.refunds[0].message


def test_a_lower_corrected_price_refunds_the_difference() -> None:
    t = run(
        completed(),
        e.PriceCorrected(
            session_id=SID, event_id="cdr-2", total_minor=300, reason="corrected CDR 2"
        ),
        90,
    )
    (cmd,) = t.commands
    assert isinstance(cmd, c.RefundPayment) and cmd.amount_minor == 33 and t.session is not None
    assert t.session.refunds[0].source == "cdr"
    higher = run(
        completed(),
        e.PriceCorrected(
            session_id=SID, event_id="cdr-3", total_minor=400, reason="corrected CDR 3"
        ),
        90,
    )
    assert higher.session is not None
    assert higher.commands == () and "nothing to refund" in higher.session.notes[-1]


def test_a_terminal_that_refuses_to_reverse_a_capture_gets_a_refund_next() -> None:
    """Terminals differ: some reverse a pre-auth's booking by 06 30, some refuse it. A refused
    reversal moves no money, and the request made again is a refund (06 31)."""
    s = run(
        completed(),
        e.RefundRequested(session_id=SID, event_id="a", amount_minor=333, reason="fault"),
        90,
    ).session
    assert s is not None and s.refunds[0].method is RefundMethod.REVERSAL
    s = run(s, result("reversal", Outcome.ERROR, None, receipt=None), 91).session
    assert (
        s is not None and s.refunds[0].status is RefundStatus.FAILED and s.refundable_minor == 333
    )
    t = run(
        s, e.RefundRequested(session_id=SID, event_id="b", amount_minor=333, reason="fault"), 92
    )
    (cmd,) = t.commands
    assert isinstance(cmd, c.RefundPayment) and cmd.method == "refund" and cmd.amount_minor == 333


def test_a_refund_approved_but_not_yet_acknowledged_is_not_given_back() -> None:
    """Stored before the terminal has our acknowledgement: a crash there lets the terminal
    reverse it (ZVT 2.2.8), so it stays sent (listed by reconciliation) with its receipt, and
    nothing goes upstream until the acknowledged result."""
    s = run(
        completed(),
        e.RefundRequested(
            session_id=SID, event_id="refund-a", amount_minor=333, reason="charger fault"
        ),
        90,
    ).session
    held = e.TerminalResultArrived(
        session_id=SID,
        event_id="r-held",
        operation=e.Operation.REVERSAL,
        outcome=Outcome.APPROVED,
        amount_minor=333,
        ref="9",
        provisional=True,
    )
    t = run(s, held, 91)
    s = t.session
    assert s is not None and t.commands == () and s.refunded_minor == 0
    assert (
        s.refunds[0].status is RefundStatus.SENT
        and s.refunds[0].ref == "9"
        and s.refunds[0].pending
    )
    t = run(s, result("reversal", Outcome.APPROVED, 333), 91)
    assert t.session is not None and t.session.refunded_minor == 333
    assert [cmd.kind for cmd in t.commands if isinstance(cmd, c.Enqueue)] == ["session.refund"]
