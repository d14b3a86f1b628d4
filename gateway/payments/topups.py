"""Top-ups: one more hold on the same card while the charge goes on (``preauth.topup`` says
when and how much). The cap rises only on an acknowledged approval; a refused or lost top-up
leaves the cap where it was, and a lost one marks the first hold uncertain (the terminal may
have raised it), so it is later captured by booking the amount, never by releasing a rest."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.events import Operation, TimerKind
from gateway.payments.model import BilledTo, Hold, Session, hold_by_ref
from gateway.payments.moves import (
    CHARGING_STATES,
    Transition,
    charging_timer,
    first_hold_uncertain,
    go,
    note,
)
from gateway.payments.policy import Policy
from gateway.payments.states import State, Trigger


def ask_topup(s: Session, extra: int, now: datetime, policy: Policy) -> Transition:
    first = s.holds[0]
    timer = (TimerKind.ANSWER, now + policy.answer_timeout_of(s.terminal))
    s = go(s, Trigger.TOP_UP, topup_minor=extra, timer=timer)
    cmd = c.TopUp(
        key=f"{s.id}:topup:{s.authorized_minor}",
        session_id=s.id,
        terminal=s.terminal,
        ref=first.ref,
        amount_minor=extra,
        currency=s.currency,
        trace_no=first.trace_no,
        reference=s.id[:16],
    )
    return Transition(s, (cmd,))


def topup_result(
    s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy
) -> Transition:
    if not s.topup_minor:
        return Transition(s, note="top-up result not awaited: ignored")
    if s.held_result is not None:
        # Approved, stored, and then the answer was lost (a restart, a timeout): whether our
        # acknowledgement reached the terminal is unknown, so the cap stays where it was. A
        # bigger first hold is closed by its capture or release; a second one no session owns
        # is released by the terminal sweep.
        ev = replace(ev, message=f"approved as receipt {s.held_result.ref} but never acknowledged")
        s = replace(s, held_result=None)
    known = hold_by_ref(s, ev.ref) if ev.ref is not None else None
    if ev.outcome is Outcome.APPROVED and known is not None:
        ev = _as_increment(s, ev, known)
        if ev.outcome is Outcome.UNKNOWN:  # what the terminal said does not fit what was asked
            s = replace(s, discrepancies=(*s.discrepancies, ev.message))
    if ev.outcome is Outcome.APPROVED and ev.ref is not None:
        added = ev.amount_minor if ev.amount_minor is not None else s.topup_minor
        if known is not None:  # the terminal increased the same reservation
            holds = tuple(
                replace(h, amount_minor=h.amount_minor + added) if h is known else h
                for h in s.holds
            )
        else:  # a new reservation with its own receipt, settled on its own
            target = 0 if s.state not in CHARGING_STATES else None
            holds = (*s.holds, Hold(ev.ref, added, ev.trace_no, target_minor=target))
        s = replace(s, holds=holds, topup_minor=0)
    else:
        lost = "top-up result lost" + (f" ({ev.message})" if ev.message else "")
        why = lost if ev.outcome is Outcome.UNKNOWN else f"top-up refused: {ev.message}"
        s = replace(
            s,
            topup_refused=True,
            topup_minor=0,
            notes=note(s, f"{why}; the charge stops at the cap"),
            lost_results=s.lost_results + (ev.outcome is Outcome.UNKNOWN),
        )
        if ev.outcome is Outcome.UNKNOWN:  # it may have raised the first hold after all
            s = first_hold_uncertain(s)
    if s.state is State.TOPPING_UP and s.metering.billed_to is BilledTo.NOT_YET:
        return Transition(go(s, Trigger.TOPPED_UP, timer=charging_timer(s, now, policy)))
    return Transition(s)  # a charge that ended meanwhile is billed now (``charging.after_topup``)


def _as_increment(s: Session, ev: e.TerminalResultArrived, known: Hold) -> e.TerminalResultArrived:
    """The amount a top-up of the same reservation added. The driver hands the engine the
    increment (a terminal that answers with the reservation's new total is translated there,
    per terminal: ``topup_amount``). An answer above what was asked cannot be an increment: it
    is read as the new total when it follows from the hold we know (added within what was
    asked); otherwise it is an unknown outcome — the cap stays, the hold is captured by booking
    its amount — and never added as it came (a hold counted twice is money we do not hold)."""
    answer = ev.amount_minor
    if answer is None or answer <= s.topup_minor:
        return ev
    added = answer - known.amount_minor
    if 0 < added <= s.topup_minor:
        return replace(ev, amount_minor=added)
    return replace(
        ev,
        outcome=Outcome.UNKNOWN,
        amount_minor=None,
        message=f"the top-up answer {answer} is neither the {s.topup_minor} asked nor a total "
        f"of the hold {known.amount_minor} and it",
    )


def topup_lost(s: Session, event_id: str, now: datetime, policy: Policy) -> Transition:
    """No answer to the top-up (or a restart while it was out): its fate is unknown."""
    lost = e.TerminalResultArrived(
        session_id=s.id, event_id=event_id, operation=Operation.TOPUP, outcome=Outcome.UNKNOWN
    )
    return topup_result(s, lost, now, policy)
