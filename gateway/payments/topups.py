"""Top-ups: one more hold on the same card while the charge goes on (``preauth.topup`` says
when and how much). The cap rises only on an approval: acknowledged, or proven by the terminal's
own last result. A refused top-up leaves the cap where it was. A lost one is asked about before
anything is billed (``topup_enquired``: the open pre-auths and the last result, ZVT 06 20);
without proof the cap stays and the first hold is marked uncertain (the terminal may have
raised it), so it is later captured by booking the amount, never by releasing a rest."""

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
    unacknowledged = s.held_result is not None
    unanswered = ev.outcome is Outcome.UNKNOWN  # not an answer that does not fit what was asked
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
                replace(h, amount_minor=h.amount_minor + added, topup_trace=ev.trace_no)
                if h is known
                else h
                for h in s.holds
            )
        else:  # a new reservation with its own receipt, settled on its own
            target = 0 if s.state not in CHARGING_STATES else None
            holds = (*s.holds, Hold(ev.ref, added, ev.trace_no, target_minor=target))
        s = replace(s, holds=holds, topup_minor=0, topup_asked=False)
    elif unanswered and not (s.topup_asked or unacknowledged) and s.holds:
        # the answer was lost: ask before anything is billed. Not for an approval stored and
        # never acknowledged: the terminal reverses it (ZVT 2.2.8), its last result may not say
        return _ask(s, now, policy)
    else:
        lost = "top-up result lost" + (f" ({ev.message})" if ev.message else "")
        why = lost if ev.outcome is Outcome.UNKNOWN else f"top-up refused: {ev.message}"
        s = replace(
            s,
            topup_refused=True,
            topup_minor=0,
            topup_asked=False,
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
    """No answer to the top-up (or a restart while it was out): its fate is unknown, and the
    terminal is asked about it once (``topup_enquired``)."""
    lost = e.TerminalResultArrived(
        session_id=s.id, event_id=event_id, operation=Operation.TOPUP, outcome=Outcome.UNKNOWN
    )
    return topup_result(s, lost, now, policy)


def topup_resumed(s: Session, now: datetime, policy: Policy) -> Transition:
    """A restart while the top-up (or the enquiry about it) was out: its answer is lost, so the
    terminal is asked again (the runner answers with its last result as of the start)."""
    return topup_lost(replace(s, topup_asked=False), "resume", now, policy)


def _ask(s: Session, now: datetime, policy: Policy) -> Transition:
    """Ask the terminal what it holds and what it did last; the top-up stays out (so a charge
    that ends meanwhile waits for the answer: ``charging.after_topup``) until the answer or
    the answer timer (``timers``: then it is lost). A charge stopping at the cap keeps its stop
    deadline: when it passes the bill waits for the answer (``charging.bill``)."""
    timer = (TimerKind.ANSWER, now + policy.answer_timeout_of(s.terminal))
    if s.timer is not None and s.timer[0] is TimerKind.STOP:
        timer = s.timer
    s = replace(s, topup_asked=True, timer=timer)
    key = f"{s.id}:topup-query:{s.authorized_minor}"
    return Transition(s, (c.QueryOpenPreauths(key, s.id, s.terminal),))


def topup_enquired(
    s: Session, ev: e.OpenPreauthsReported, now: datetime, policy: Policy
) -> Transition:
    """The terminal's answer about a top-up whose own answer was lost. It raised the first hold
    when its last result (ZVT 06 20) is an approval of that hold (same ref, still open) under a
    trace number that is neither the hold's own approval nor an earlier top-up of it (with the
    same ref, and the same amount when a top-up asks what the hold held, only the trace tells
    them apart). The host has already dropped a last result that may be another session's
    (``EngineHost``). After a restart the answer is the terminal's last result as it was at the
    start (the runner's snapshot, ``last_asked_at``): taken after the top-up went out, before
    any other session's command, and a later top-up of the hold cannot be the one asked about
    (a lost top-up is the session's last: ``topup_refused``). The amount is read as an answer
    would be (``_as_increment``). Anything less is no proof: the top-up is lost, as before the
    enquiry (the cap stays, the hold uncertain)."""
    first, last = s.holds[0], ev.last
    proven = (
        not ev.failed
        and last is not None
        and last.approved
        and last.ref == first.ref
        and first.ref in ev.refs
        and last.amount_minor is not None
        and last.trace_no is not None
        and first.trace_no is not None
        and last.trace_no not in (first.trace_no, first.topup_trace)  # not one we know of
    )
    if not proven or last is None:
        return topup_lost(s, ev.event_id, now, policy)
    said = e.TerminalResultArrived(
        session_id=s.id,
        event_id=ev.event_id,
        operation=Operation.TOPUP,
        outcome=Outcome.APPROVED,
        amount_minor=last.amount_minor,
        ref=last.ref,
        for_ref=first.ref,
        trace_no=last.trace_no,
    )
    s = replace(
        s,
        notes=note(
            s,
            f"top-up answer lost; the terminal's last result shows it "
            f"approved (trace {last.trace_no})",
        ),
    )
    return topup_result(s, said, now, policy)
