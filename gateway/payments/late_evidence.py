"""Evidence that comes after a session's settlement: the end-of-day totals deciding an
unconfirmed capture (``evidence_decided``; the rule is ``evidence.decide_by_totals``), and a
report that contradicts a booked outcome (``contradicted``: recorded, never applied).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.payments import capture, corrections
from gateway.payments import events as e
from gateway.payments.model import HoldStatus, Session
from gateway.payments.moves import Transition, finish, go, note
from gateway.payments.plausibility import KEPT
from gateway.payments.policy import Policy
from gateway.payments.settlement import captured_as_asked
from gateway.payments.states import State, Trigger


def evidence_decided(
    s: Session, ev: e.CaptureEvidence, now: datetime, policy: Policy
) -> Transition:
    """The terminal's end-of-day totals decided an unconfirmed capture (``evidence.py``): book
    the unconfirmed holds as asked, or mark them lapsed uncaptured; only now does the outcome
    go upstream, with the evidence in its notes. The debt is what any other settlement leaves
    (within the driver's declared amount, never above a person's resolution) and follows a
    correction that arrived meanwhile: what the evidence shows captured above it is refunded."""
    if s.state is not State.CAPTURE_UNCONFIRMED:
        return Transition(s, note=f"capture evidence in {s.state}: ignored")
    holds = list(s.holds)
    sent = [h.capture_sent_at for h in holds if h.status is HoldStatus.UNCONFIRMED]
    for i, h in enumerate(holds):
        if h.status is HoldStatus.UNCONFIRMED:
            holds[i] = (
                captured_as_asked(h, None, h.capture_sent_at or now)  # in the batch of our capture
                if ev.captured
                else replace(h, status=HoldStatus.LAPSED)
            )
    s = replace(s, holds=tuple(holds), notes=note(s, ev.evidence))
    owed = capture.owed(s)
    if s.bill.debt_resolved:  # a debt a person settled never grows again
        owed = min(owed, s.bill.owed_minor)
    if ev.captured and s.bill.captured_at is None:
        # in the batch of the capture we sent (reconciliation counts it there); a session
        # with an earlier capture stays booked at that one (``next_hold``)
        at = max((t for t in sent if t is not None), default=now)
        s = replace(s, bill=replace(s.bill, captured_at=at))
    trigger = Trigger.EVIDENCE_CAPTURED if ev.captured else Trigger.EVIDENCE_NOT_CAPTURED
    s = go(s, trigger, owed_minor=owed)
    if s.bill.corrected_minor is None:
        return finish(s)
    done = finish(corrections.follow_correction(s))  # the outcome carries the corrected debt
    assert done.session is not None  # noqa: S101 - finish keeps the session
    refund = corrections.after_evidence(
        done.session,
        now,
        acquirer=s.terminal in policy.online_deadlines,
        card_present=s.terminal not in policy.no_card_present_refunds,
    )
    return Transition(refund.session, (*done.commands, *refund.commands))


def contradicted(s: Session, ev: e.OutcomeContradicted) -> Transition:
    """Later evidence against the booked outcome: a discrepancy on the session (and a note),
    for a person to settle against the acquirer's report. The booking is not undone: the
    money rule books on positive evidence, and which of two contradicting reports stands is
    the acquirer's to say, not ours to guess."""
    if ev.detail in s.discrepancies:
        return Transition(s, note="contradiction: a repeat")
    more = (ev.detail,) if len(s.discrepancies) < KEPT else ()
    return Transition(replace(s, discrepancies=(*s.discrepancies, *more), notes=note(s, ev.detail)))
