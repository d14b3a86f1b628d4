"""Settling holds at the terminal: what a terminal result proves, and what is booked.

Each hold is settled in turn by the command its target asks for (``Capture`` of the target, or
``Release``). A capture is booked as what was *asked*, only on positive evidence: the
terminal's approval of our command, or — after a lost answer — its repeat of the last result
(ZVT 06 20) showing it once the hold is gone. A hold gone without that evidence is
*unconfirmed*; a hold to release gone only after its validity ended is *lapsed* (its absence
proves no release); one still open is tried again with backoff until it is about to lapse. When
no hold is left open, the session's final state sums them up and what was priced but not
captured is owed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from drivers.base import Outcome
from gateway.errors import InvariantViolated
from gateway.fiscal.receipt import ReceiptState
from gateway.payments import capture
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.events import Operation, TimerKind
from gateway.payments.model import (
    Hold,
    HoldStatus,
    Session,
    hold_by_ref,
    replace_hold,
)
from gateway.payments.moves import (
    Transition,
    finish,
    go,
    note,
    outcome,
    query,
)
from gateway.payments.policy import Policy
from gateway.payments.receipts import print_receipt, render
from gateway.payments.states import State, Trigger
from gateway.payments.strategy_choice import choose_strategy


def settle_command(s: Session, now: datetime, policy: Policy) -> Transition:
    """The command that settles the current hold in the session's (capturing/releasing) state."""
    hold = s.current
    if hold is None:
        raise InvariantViolated(f"session {s.id} in {s.state} has no open hold to settle")
    choice = choose_strategy(
        policy.hold_of(s.route), policy.capabilities_of(s.terminal), s.terminal
    )
    if s.state is not State.CAPTURING and choice.give_back == "lapse":
        # A terminal that refuses the release of an uncompleted reservation is never asked:
        # nothing is taken, the hold lapses at the end of its validity (strategy_choice.py).
        why = "the terminal cannot release an uncompleted hold: left to lapse, nothing taken"
        return give_up(s, hold, now, policy, why, fate_known=True)
    s = replace(s, timer=(TimerKind.ANSWER, now + policy.answer_timeout_of(s.terminal)))
    if s.state is State.CAPTURING:
        s = replace_hold(s, hold, replace(hold, capture_sent_at=now))
        cmd: c.Command = c.Capture(
            key=f"{s.id}:capture:{hold.ref}",
            session_id=s.id,
            terminal=s.terminal,
            ref=hold.ref,
            held_minor=hold.amount_minor,
            amount_minor=hold.target_minor or 0,
            currency=s.currency,
            reference=s.id[:16],
            exact=hold.uncertain,
        )
    else:
        cmd = c.Release(
            key=f"{s.id}:release:{hold.ref}",
            session_id=s.id,
            terminal=s.terminal,
            ref=hold.ref,
            held_minor=hold.amount_minor,
            currency=s.currency,
        )
    return Transition(s, (cmd,))


def settlement_result(
    s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy
) -> Transition:
    """The terminal's answer to a capture or release."""
    hold = hold_by_ref(s, ev.for_ref)
    if hold is None or hold.status is not HoldStatus.OPEN:
        return Transition(s, note=f"{ev.operation} result for a hold not being settled: ignored")
    capture = ev.operation == Operation.CAPTURE
    settling = (
        (State.CAPTURING, State.CAPTURE_UNKNOWN, State.CAPTURE_RETRY)
        if capture
        else (State.RELEASING, State.RELEASE_UNKNOWN, State.RELEASE_RETRY)
    )
    if s.state not in settling:
        return Transition(s, note=f"{ev.operation} result in {s.state}: ignored")
    if ev.outcome is Outcome.APPROVED and s.state is not settling[2]:  # a late approval counts
        return _settled(s, ev, hold, now, policy)
    if s.state is not settling[0]:
        return Transition(s, note=f"{ev.operation} {ev.outcome} in {s.state}: the enquiry decides")
    # Declined, refused or lost: nothing is assumed. Ask the terminal what it holds and did.
    # A busy terminal answered, though: the silence the backoff grows on is over, so the next
    # try comes after the first interval, not 30 minutes on after a few busy answers.
    attempts = 0 if ev.outcome is Outcome.BUSY else s.attempts
    s = go(
        s,
        Trigger.LOST,
        attempts=attempts,
        notes=note(s, f"{ev.operation} {ev.outcome}: {ev.message}"),
    )
    return query(s, now, policy)


def _settled(
    s: Session, ev: e.TerminalResultArrived, hold: Hold, now: datetime, policy: Policy
) -> Transition:
    """The terminal approved our capture or release of ``hold``: book what was *asked*."""
    if ev.operation == Operation.CAPTURE:
        target = hold.target_minor or 0
        if hold.uncertain:  # the terminal may have held more than we know: it released the rest
            s, known = _uncertain_rest(s, hold, ev.amount_minor)
            s = replace_hold(s, hold, known)
            hold = known
        if ev.amount_minor is not None and ev.amount_minor not in (
            target,
            hold.amount_minor - target,
        ):
            s = replace(
                s,
                discrepancies=(
                    *s.discrepancies,
                    f"capture of hold {hold.ref}: asked {target} of "
                    f"{hold.amount_minor}, terminal answered {ev.amount_minor}",
                ),
            )
        done = captured_as_asked(hold, ev.ref, now)
    else:
        done = released_as_asked(hold, ev.ref)
    return next_hold(replace_hold(s, hold, done), now, policy)


def _uncertain_rest(s: Session, hold: Hold, echo: int | None) -> tuple[Session, Hold]:
    """A hold captured by booking its target (a top-up of it was lost: the terminal may hold
    more than ``amount_minor``) released whatever the terminal held above the target. An echo
    above the rest we know is that release (the hold was raised by the lost top-up): the hold's
    amount follows it. Otherwise the released figure is the part we know, and the session says
    the terminal may have released more (found by the reference model): never a figure we do
    not know passed off as the whole."""
    target = hold.target_minor or 0
    rest = hold.amount_minor - target
    if echo is not None and echo != target and echo == rest:  # the terminal held what we know
        return s, hold
    if echo is not None and echo != target and echo > rest:
        said = (
            f"hold {hold.ref}: the terminal released {echo} above the capture of {target}: "
            f"it held {target + echo}, not {hold.amount_minor} (a top-up's answer was lost)"
        )
        return replace(s, notes=note(s, said)), replace(hold, amount_minor=target + echo)
    said = (
        f"hold {hold.ref}: released at least {rest}; the terminal "
        f"may have held more (a top-up's answer was lost) and released that too"
    )
    return replace(s, discrepancies=(*s.discrepancies, said)), hold


def released_as_asked(hold: Hold, booking_ref: str | None) -> Hold:
    """The hold let go whole, its release booked under the terminal's reference."""
    return replace(
        hold, released_minor=hold.amount_minor, status=HoldStatus.RELEASED, booking_ref=booking_ref
    )


def captured_as_asked(hold: Hold, booking_ref: str | None, at: datetime) -> Hold:
    """The hold booked as asked (at ``at``): its target captured, the rest released."""
    target = hold.target_minor or 0
    return replace(
        hold,
        captured_minor=target,
        released_minor=hold.amount_minor - target,
        status=HoldStatus.CAPTURED,
        booking_ref=booking_ref,
        captured_at=at,
    )


def _unreleased(s: Session) -> tuple[str, ...]:
    return tuple(
        f"hold {h.ref} ({h.amount_minor} {s.currency}) not released before it lapsed: "
        f"the issuer lets it go"
        for h in s.holds
        if h.status is HoldStatus.LAPSED and not h.target_minor
    )


def give_up(
    s: Session, hold: Hold, now: datetime, policy: Policy, why: str, *, fate_known: bool
) -> Transition:
    """The hold cannot be settled before it lapses: say so on the hold (never as if done). A
    capture whose fate the terminal could not tell us is unconfirmed, not lapsed."""
    capture = s.state is State.CAPTURE_UNKNOWN and bool(hold.target_minor)
    status = HoldStatus.UNCONFIRMED if capture and not fate_known else HoldStatus.LAPSED
    s = replace(s, notes=note(s, f"hold {hold.ref}: {why}"))
    return next_hold(replace_hold(s, hold, replace(hold, status=status)), now, policy)


def next_hold(s: Session, now: datetime, policy: Policy) -> Transition:
    """One hold is settled: settle the next one, or finish with a state that sums them up.
    The booking time is the first capture's: the terminal's batch holds it from then on, even
    when a later hold of the session is never captured."""
    if s.captured_minor and s.bill.captured_at is None:
        s = replace(s, bill=replace(s.bill, captured_at=now))
    hold = s.current
    if hold is not None:
        trigger = Trigger.NEXT_CAPTURE if hold.target_minor else Trigger.NEXT_RELEASE
        return settle_command(go(s, trigger, attempts=0), now, policy)
    statuses = {(h.status, bool(h.target_minor)) for h in s.holds}
    if any(status is HoldStatus.UNCONFIRMED for status, _ in statuses):
        trigger = Trigger.CAPTURE_UNPROVEN
    elif (HoldStatus.LAPSED, True) in statuses:
        trigger = Trigger.CAPTURE_LAPSED
    elif (HoldStatus.LAPSED, False) in statuses and not s.captured_minor:
        trigger = Trigger.RELEASE_LAPSED
    elif s.captured_minor:
        # Every capture stands; a spare hold that lapsed unreleased takes nothing from the
        # driver: the money taken is the outcome, the lapsed hold its own record (a discrepancy
        # here, a "lapsed" payment record in the store).
        trigger = Trigger.ALL_CAPTURED
        s = replace(s, discrepancies=(*s.discrepancies, *_unreleased(s)))
    else:
        trigger = Trigger.ALL_RELEASED
    owed = capture.owed(s)
    if (
        trigger is Trigger.ALL_CAPTURED
        and policy.fiscal.signs_each_receipt
        and not render(s, now, policy).complete
    ):
        # The money is settled (the outcome goes up now: the CPO invoices from it); the receipt
        # waits a little for the CPO's fiscal signature, then is printed as pending.
        s = go(
            s,
            Trigger.AWAIT_FISCAL,
            owed_minor=owed,
            receipt=ReceiptState.AWAITING,
            timer=(TimerKind.FISCAL, now + policy.fiscal_wait),
        )
        return Transition(s, outcome(s))
    s = go(s, trigger, owed_minor=owed)
    if s.state is State.CAPTURE_UNCONFIRMED:
        # Never FAILED upstream for a capture the terminal may have made: the outcome waits for
        # the evidence (the end-of-day totals, ``evidence_decided``); reconciliation lists the
        # session meanwhile (``capture_unconfirmed``), the price stays owed.
        return Transition(replace(s, timer=None))
    printed: tuple[c.Command, ...] = ()
    if s.state is State.COMPLETED:
        s, printed = print_receipt(s, now, policy)
    done = finish(s)
    return Transition(done.session, (*done.commands, *printed))
