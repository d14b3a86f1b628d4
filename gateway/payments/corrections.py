"""Refunds and price corrections on a completed session (the record is ``refunds.Refund``).

A refund gives back at most what was captured and not yet given back, one at a time; the whole
of a single capture is reversed while its batch is open, anything else is refunded by amount.
A corrected price (a later CDR) refunds what was captured above it. Money counts as given back
only on the terminal's acknowledged approval.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import Session
from gateway.payments.moves import Transition, note
from gateway.payments.refunds import Refund, RefundMethod, RefundStatus
from gateway.payments.states import State


def _refusal(s: Session, ev: e.RefundRequested) -> str:
    """Why a refund cannot be made, or "" when it can."""
    available = s.refundable_minor
    if s.state is not State.COMPLETED:
        return f"only a completed session's capture can be refunded (this one is {s.state.value})"
    if any(r.pending for r in s.refunds):
        return "another refund of this session is not settled yet"
    if ev.amount_minor <= 0:
        return "a refund must be above zero"
    if ev.amount_minor > available:
        return (
            f"a refund of {ev.amount_minor} exceeds the {available} captured and not yet refunded"
        )
    return ""


def refund_requested(s: Session, ev: e.RefundRequested, now: datetime) -> Transition:
    why = _refusal(s, ev)
    booking = [h.booking_receipt for h in s.holds if h.captured_minor]
    whole = (
        not s.refunds
        and ev.amount_minor == s.captured_minor
        and len(booking) == 1
        and booking[0] is not None
    )
    method = RefundMethod.REVERSAL if whole and not ev.day_closed else RefundMethod.REFUND
    refund = Refund(
        ev.event_id,
        ev.amount_minor,
        ev.reason,
        ev.source,
        method,
        RefundStatus.REFUSED if why else RefundStatus.SENT,
        now,
        message=why,
    )
    s = replace(s, refunds=(*s.refunds, refund))
    if why:
        return Transition(s, note=f"refund refused: {why}")
    cmd = c.RefundPayment(
        key=f"{s.id}:refund:{ev.event_id}",
        session_id=s.id,
        terminal=s.terminal,
        method=method.value,
        receipt_no=booking[0] if method is RefundMethod.REVERSAL else None,
        amount_minor=ev.amount_minor,
        currency=s.currency,
    )
    return Transition(s, (cmd,))


def price_corrected(s: Session, ev: e.PriceCorrected, now: datetime) -> Transition:
    over = s.refundable_minor - ev.total_minor
    if s.state is not State.COMPLETED or over <= 0:
        why = f"price corrected to {ev.total_minor}: nothing to refund"
        return Transition(replace(s, notes=note(s, why)))
    request = e.RefundRequested(
        session_id=s.id,
        event_id=ev.event_id,
        amount_minor=over,
        reason=ev.reason,
        source="cdr",
        day_closed=ev.day_closed,
    )
    return refund_requested(s, request, now)


def refund_result(s: Session, ev: e.TerminalResultArrived) -> Transition:
    sent = next((r for r in s.refunds if r.status is RefundStatus.SENT), None)
    if sent is None:
        return Transition(s, note="refund result: none in flight (a repeat)")
    if ev.provisional and ev.outcome is Outcome.APPROVED:
        # Not given back until the terminal has our acknowledgement (ZVT 2.2.8: it reverses a
        # result nobody acknowledged). A crash here leaves the refund ``sent`` with its receipt,
        # listed by reconciliation until a person settles it against the terminal's journal.
        held = replace(
            sent, receipt_no=ev.receipt_no, message="approved, acknowledgement not yet sent"
        )
        return Transition(replace(s, refunds=tuple(held if r is sent else r for r in s.refunds)))
    if ev.outcome is Outcome.APPROVED:
        status = RefundStatus.DONE
    elif ev.outcome is Outcome.UNKNOWN:
        status = RefundStatus.UNKNOWN
    else:
        status = RefundStatus.FAILED
    # A lost answer after a stored approval keeps that approval's receipt number: it is what
    # the terminal's journal shows if the refund stood (issue 26, item 5).
    receipt = ev.receipt_no if ev.receipt_no is not None else sent.receipt_no
    done = replace(sent, status=status, receipt_no=receipt, message=ev.message)
    s = replace(s, refunds=tuple(done if r is sent else r for r in s.refunds))
    if status is not RefundStatus.DONE:
        return Transition(s)
    payload = {
        "session_id": s.id,
        "authorization_reference": s.reference,
        "refund_id": done.id,
        "amount_minor": done.amount_minor,
        "currency": s.currency,
        "reason": done.reason,
        "source": done.source,
        "method": done.method.value,
        "receipt_no": done.receipt_no,
    }
    message = c.Enqueue(f"{s.id}:refund:{done.id}", f"session:{s.id}", "session.refund", payload)
    return Transition(s, (message,))
