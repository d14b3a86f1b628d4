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
from drivers.money import Money
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import Session, update
from gateway.payments.moves import Transition, note
from gateway.payments.plausibility import KEPT
from gateway.payments.refunds import Refund, RefundMethod, RefundStatus


def refund_refusal(s: Session, amount_minor: int) -> str:
    """Why a refund of ``amount_minor`` of this session cannot be made, or "" when it can: the
    one rule, asked by the engine and by ``evpay sessions refund`` before it stores a request."""
    available = s.refundable_minor
    if not s.final or not s.captured_minor:
        # a settled session's capture: completed, or captured in part (a later hold lapsed or
        # stays unconfirmed) — what was taken can be given back
        return (
            f"only a completed session's capture, or what a settled session captured, can be "
            f"refunded (this one is {s.state.value})"
        )
    if any(r.pending for r in s.refunds):
        return "another refund of this session is not settled yet"
    if amount_minor <= 0:
        return "a refund must be above zero"
    if amount_minor > available:
        return (
            f"a refund of {Money(amount_minor, s.currency)} is more than the "
            f"{Money(available, s.currency)} captured and not yet refunded"
        )
    return ""


def refund_requested(s: Session, ev: e.RefundRequested, now: datetime) -> Transition:
    if ev.source == "cdr" and ev.inbox_id is not None:
        # the waiting correction's refund ``refund-resolve`` stored: what it gives back is what
        # the correction asks when it is carried out (a newer correction may have refunded it)
        waits = s.bill.correction_waiting
        ev = replace(ev, amount_minor=waiting_refund_minor(s) if waits else 0)
    why = refund_refusal(s, ev.amount_minor)
    if why and ev.source == "cdr" and ev.inbox_id is not None and not s.bill.correction_waiting:
        why = "the corrected price's refund was made meanwhile: nothing more to give back"
    booking: list[str | None] = [h.booking_ref for h in s.holds if h.captured_minor]
    whole = (
        not s.refunds
        and ev.amount_minor == s.captured_minor
        and len(booking) == 1
        and booking[0] is not None
    )
    if ev.acquirer:  # the acquirer's /refunds against the captured payment's reference
        method = RefundMethod.ACQUIRER
        booking = [next((h.ref for h in s.holds if h.captured_minor), None)]
    elif whole and not ev.day_closed:
        method = RefundMethod.REVERSAL
    else:
        method = RefundMethod.REFUND
        if not why and not ev.card_present:
            why = (
                "this terminal takes no card-present refund (needed for a part of a payment, or "
                "after its batch closed): refund it in the acquirer's back office"
            )
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
    if ev.source == "cdr":  # the refund of a correction that waited (refund-resolve stores it)
        s = update(s, correction_waiting="")
    cmd = c.RefundPayment(
        key=f"{s.id}:refund:{ev.event_id}",
        session_id=s.id,
        terminal=s.terminal,
        method=method.value,
        ref=booking[0] if method is not RefundMethod.REFUND else None,
        amount_minor=ev.amount_minor,
        currency=s.currency,
    )
    return Transition(s, (cmd,))


def price_corrected(s: Session, ev: e.PriceCorrected, now: datetime) -> Transition:
    """The CPO's corrected total: the debt follows it, and what was captured above it is
    refunded — once any refund in flight has settled (the two are never raced). A total in
    another currency is refused and recorded: amounts in two currencies are never netted; so is
    a total below zero."""
    if any(r.id == ev.event_id for r in s.refunds) or s.bill.correction_waiting == ev.event_id:
        return Transition(s, note="price correction: a repeat")
    why = ""
    if ev.currency is not None and ev.currency != s.currency:
        why = (
            f"{ev.reason}: a total of {ev.total_minor} {ev.currency} for a session in "
            f"{s.currency}: refused, never netted across currencies"
        )
    elif ev.total_minor < 0:  # a credit CDR's negative amounts are no price: for a person
        why = f"{ev.reason}: a total of {ev.total_minor} {s.currency} is below zero: refused"
    if why:
        refused = Refund(
            ev.event_id,
            0,
            ev.reason,
            "cdr",
            RefundMethod.REFUND,
            RefundStatus.REFUSED,
            now,
            message=why,
        )
        more = (why,) if len(s.discrepancies) < KEPT else ()
        s = replace(s, refunds=(*s.refunds, refused), discrepancies=(*s.discrepancies, *more))
        return Transition(replace(s, notes=note(s, why)), note=why)
    s = update(s, corrected_minor=ev.total_minor)
    if not s.final:
        why = f"price corrected to {ev.total_minor}: applied once the session is settled"
        s = update(s, correction_waiting=ev.event_id)
        return Transition(replace(s, notes=note(s, why)))
    s = follow_correction(s)
    over = s.refundable_minor - ev.total_minor
    if not s.captured_minor or over <= 0:
        why = f"price corrected to {ev.total_minor}: nothing to refund, {s.bill.owed_minor} owed"
        return Transition(replace(s, notes=note(s, why)))
    if any(r.pending for r in s.refunds):
        why = f"price corrected to {ev.total_minor}: refunded once the refund in flight settles"
        s = update(s, correction_waiting=ev.event_id)
        return Transition(replace(s, notes=note(s, why)))
    return _refund_above(
        s, ev.event_id, ev.reason, now, flags=(ev.day_closed, ev.acquirer, ev.card_present)
    )


def settled_with_correction(s: Session, now: datetime, *, acquirer: bool = False) -> Transition:
    """A session that has just become final with a correction that arrived while it was being
    settled: the debt follows the corrected total, and a completed one refunds what it
    captured above it."""
    s = follow_correction(s)
    over = s.refundable_minor - (s.bill.corrected_minor or 0)
    if not s.captured_minor or over <= 0 or any(r.pending for r in s.refunds):
        return Transition(update(s, correction_waiting="") if over <= 0 else s)
    return _refund_above(
        s, s.bill.correction_waiting, "corrected CDR", now, flags=(False, acquirer, True)
    )


def after_evidence(s: Session, now: datetime, *, acquirer: bool, card_present: bool) -> Transition:
    """The end-of-day evidence decided an unconfirmed capture of a session whose price was
    corrected meanwhile: the debt follows the corrected total, and what the evidence shows
    captured above it is refunded (by amount: that end of day closed the capture's batch), or
    once a refund in flight has settled."""
    s = follow_correction(s)
    over = s.refundable_minor - (s.bill.corrected_minor or 0)
    if over <= 0:
        return Transition(s)
    if any(r.pending for r in s.refunds):
        return Transition(update(s, correction_waiting=f"{s.id}:evidence"))
    return _refund_above(
        s, f"{s.id}:evidence", "corrected CDR", now, flags=(True, acquirer, card_present)
    )


def follow_correction(s: Session) -> Session:
    """The debt after a corrected total: what it asks above what the driver has paid for the
    charge (captured, less the refunds of corrections, done or under way); above the holds it
    is a shortfall. Another refund (a technician's goodwill) never makes a debt, and a debt a
    person has settled never grows again."""
    total = s.bill.corrected_minor
    if total is None:
        return s
    corrected = sum(
        r.amount_minor
        for r in s.refunds
        if r.source == "cdr" and (r.pending or r.status is RefundStatus.DONE)
    )
    owed = max(0, total - (s.captured_minor - corrected))
    if s.bill.debt_resolved:
        owed = min(owed, s.bill.owed_minor)
    shortfall = min(owed, max(0, total - s.authorized_minor))
    return update(s, owed_minor=owed, shortfall_minor=shortfall)


def _refund_above(
    s: Session, event_id: str, reason: str, now: datetime, *, flags: tuple[bool, bool, bool]
) -> Transition:
    """Refund what was captured above the corrected total (``refund_requested``'s rules);
    ``flags``: ``RefundRequested``'s day_closed, acquirer and card_present."""
    over = s.refundable_minor - (s.bill.corrected_minor or 0)
    request = e.RefundRequested(
        session_id=s.id,
        event_id=event_id,
        amount_minor=over,
        reason=reason,
        source="cdr",
        day_closed=flags[0],
        acquirer=flags[1],
        card_present=flags[2],
    )
    return refund_requested(update(s, correction_waiting=""), request, now)


def debt_resolved(s: Session, ev: e.DebtResolved) -> Transition:
    """A person explained the debt (paid in cash, written off, found at the acquirer): it is
    settled with the reason, so ``owed``, ``--owing`` and the owed metric follow."""
    amount = s.bill.shortfall_minor if ev.part == "shortfall" else s.bill.owed_minor
    if not s.final or not amount:
        return Transition(s, note="debt resolved: nothing owed")
    why = f"{ev.part} of {amount} {s.currency} resolved by a person: {ev.reason}"
    owed = s.bill.owed_minor - amount
    s = update(s, owed_minor=owed, shortfall_minor=min(owed, s.bill.shortfall_minor - amount))
    s = update(s, debt_resolved=ev.reason)
    return Transition(replace(s, notes=note(s, why)), note=why)


def refund_result(s: Session, ev: e.TerminalResultArrived, now: datetime) -> Transition:
    # An answer that names its refund (the acquirer's) is that refund's only: after a person
    # settled one, the next refund may be in flight, and it is not the one answered.
    # A late webhook (one naming its refund, with an outcome) is also evidence for the refund
    # marked unknown at its deadline.
    late = ev.refund_id is not None and ev.outcome is not Outcome.UNKNOWN
    waiting = (RefundStatus.SENT, RefundStatus.UNKNOWN) if late else (RefundStatus.SENT,)
    sent = next(
        (r for r in s.refunds if r.status in waiting and ev.refund_id in (None, r.id)), None
    )
    if sent is None:
        return _after_a_person(s, ev) or Transition(
            s, note="refund result: none in flight (a repeat)"
        )
    if ev.provisional and ev.outcome is Outcome.APPROVED:
        # Not given back until the terminal has our acknowledgement (ZVT 2.2.8: it reverses a
        # result nobody acknowledged). A crash here leaves the refund ``sent`` with its receipt,
        # listed by reconciliation until a person settles it against the terminal's journal.
        held = replace(sent, ref=ev.ref, message="approved, acknowledgement not yet sent")
        return Transition(replace(s, refunds=tuple(held if r is sent else r for r in s.refunds)))
    elsewhere = ""
    if ev.outcome is Outcome.APPROVED and sent.method is RefundMethod.REFUND:
        elsewhere = _other_card(s.card, ev.card)
    if elsewhere:
        # 06 31 pays the card presented: this one is not the session's, so the money left
        # but not to the driver. Recorded, never told upstream as the driver's refund.
        status = RefundStatus.OTHER_CARD
        said = f"refund {sent.id} of {sent.amount_minor} {s.currency} paid to {elsewhere}"
        s = replace(s, discrepancies=(*s.discrepancies, said))
    elif ev.outcome is Outcome.APPROVED:
        status = RefundStatus.DONE
    elif ev.outcome is Outcome.UNKNOWN:
        status = RefundStatus.UNKNOWN
    else:
        status = RefundStatus.FAILED
    # A lost answer after a stored approval keeps that approval's reference: it is what
    # the terminal's journal shows if the refund stood (issue 26, item 5).
    receipt = ev.ref if ev.ref is not None else sent.ref
    return _settled(s, replace(sent, status=status, ref=receipt, message=ev.message), now)


def refund_settled(s: Session, ev: e.RefundSettled, now: datetime) -> Transition:
    """A person settled a refund whose outcome we never had, against the terminal's journal
    or the acquirer's report: journaled with who and the evidence; the refunded figures, the
    debt and the CPO follow as for the terminal's own answer. A refund whose outcome is known
    is never settled again (the CLI refuses it; here it is a note)."""
    found = next((r for r in s.refunds if r.id == ev.refund_id), None)
    if found is None or not found.pending:
        said = "no such refund" if found is None else f"its outcome is known ({found.status})"
        return Transition(s, note=f"refund {ev.refund_id} not settled: {said}")
    outcome = "refunded" if ev.refunded else "not refunded"
    why = f"settled by {ev.by} as {outcome}: {ev.evidence}"
    done = replace(
        found,
        status=RefundStatus.DONE if ev.refunded else RefundStatus.FAILED,
        ref=ev.ref if ev.ref is not None else found.ref,
        message=why,
        settled_by=ev.by,
    )
    # A person's step runs outside the daemon: nothing reaches a terminal from it. A correction
    # that waited for this refund stays waiting; ``evpay sessions refund-resolve`` stores its
    # refund as a request (source ``cdr``) that the daemon carries out.
    t = _settled(s, done, now, terminal=False)
    said = f"refund {found.id} of {found.amount_minor} {s.currency} {why}"
    return Transition(replace(t.session or s, notes=note(t.session or s, said)), t.commands, said)


def waiting_refund_minor(s: Session) -> int:
    """What the correction that waits would refund now (what was captured above the corrected
    total, left to give back): 0 when none waits or another refund is still in flight."""
    if not s.bill.correction_waiting or any(r.pending for r in s.refunds):
        return 0
    return max(0, s.refundable_minor - (s.bill.corrected_minor or 0))


def _after_a_person(s: Session, ev: e.TerminalResultArrived) -> Transition | None:
    """The acquirer's late webhook (or the terminal's late answer) for a refund a person has
    settled (``refund_settled``): one that says otherwise is a discrepancy for a person, never
    applied over their settlement."""
    if ev.refund_id is not None:
        settled = next((r for r in s.refunds if r.id == ev.refund_id and r.settled_by), None)
    else:  # a terminal's answer names no refund: it answers the last one sent, one at a time
        settled = s.refunds[-1] if s.refunds and s.refunds[-1].settled_by else None
    if settled is None or ev.outcome is Outcome.UNKNOWN:
        return None
    if (ev.outcome is Outcome.APPROVED) == (settled.status is RefundStatus.DONE):
        return Transition(s, note="refund result: as a person settled it")
    said = (
        f"refund {settled.id} settled as {settled.status.value} by a person, but the "
        f"{'acquirer' if ev.refund_id else 'terminal'} now says {ev.outcome.value}: check its "
        "report"
    )
    if said in s.discrepancies:
        return Transition(s, note="refund result: a repeat")
    more = (said,) if len(s.discrepancies) < KEPT else ()
    return Transition(replace(s, discrepancies=(*s.discrepancies, *more), notes=note(s, said)))


def _settled(s: Session, done: Refund, now: datetime, *, terminal: bool = True) -> Transition:
    """A refund's answer is stored (``done``: its new status): the debt follows, a correction
    that waited for it is made now if nothing is in flight (when the step can reach the
    ``terminal``), and the CPO hears of a refund done."""
    sent = next(r for r in s.refunds if r.id == done.id)
    s = follow_correction(replace(s, refunds=tuple(done if r is sent else r for r in s.refunds)))
    waiting: tuple[c.Command, ...] = ()
    if terminal and s.bill.correction_waiting and not any(r.pending for r in s.refunds):
        # the correction that arrived while this refund was in flight is made now
        online = sent.method is RefundMethod.ACQUIRER
        more = _refund_above(
            s, s.bill.correction_waiting, "corrected CDR", now, flags=(False, online, True)
        )
        s, waiting = follow_correction(more.session or s), more.commands
    if done.status is not RefundStatus.DONE:
        return Transition(s, waiting)
    payload = {
        "session_id": s.id,
        "authorization_reference": s.reference,
        "refund_id": done.id,
        "amount_minor": done.amount_minor,
        "currency": s.currency,
        "reason": done.reason,
        "source": done.source,
        "method": done.method.value,
        "ref": done.ref,
        "ref_display": s.shown(done.ref),  # as the terminal's slip prints it (ZVT: 0055)
    }
    message = c.Enqueue(f"{s.id}:refund:{done.id}", f"session:{s.id}", "session.refund", payload)
    return Transition(s, (message, *waiting))


def _other_card(ours: dict[str, str], presented: dict[str, str]) -> str:
    """Why the card a refund was paid to is not the session's ("" when it is, or when either
    is unknown): the masked PANs' first six and last four digits, as printed."""
    a, b = ours.get("masked_pan", ""), presented.get("masked_pan", "")
    if not a or not b:
        return ""
    if a[-4:] != b[-4:] or (a[:6].isdigit() and b[:6].isdigit() and a[:6] != b[:6]):
        return f"another card ({b}) than the session's ({a})"
    return ""
