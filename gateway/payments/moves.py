"""The small moves every handler makes: follow the transition table, add a note, ask the
terminal, finish with the one outcome message. No decision about money is made here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from gateway.payments import commands as c
from gateway.payments.events import TimerKind
from gateway.payments.model import Session, update
from gateway.payments.policy import Policy
from gateway.payments.states import State, Trigger, next_state

UNKNOWN_STATES = (State.AUTH_UNKNOWN, State.CAPTURE_UNKNOWN, State.RELEASE_UNKNOWN)
CHARGING_STATES = (State.CHARGING, State.TOPPING_UP, State.STOPPING)


@dataclass(frozen=True, slots=True)
class Transition:
    session: Session | None
    commands: tuple[c.Command, ...] = ()
    note: str = ""


def go(s: Session, trigger: Trigger, **changes: Any) -> Session:
    """The next state by the table (``states.py``), with ``changes`` made in the same copy."""
    if trigger is Trigger.LOST:  # a terminal operation whose outcome we did not see
        changes.setdefault("lost_results", s.lost_results + 1)
    return update(s, state=next_state(s.state, trigger), **changes)


def note(s: Session, text: str) -> tuple[str, ...]:
    return (*s.notes, text)


def first_hold_uncertain(s: Session) -> Session:
    """A top-up extends the first hold: one whose fate is open leaves that hold's amount open."""
    first = s.holds[0]
    return replace(s, holds=(replace(first, uncertain=True), *s.holds[1:]))


def next_try(s: Session, now: datetime, policy: Policy) -> datetime | None:
    """When to ask or try again (exponential backoff), or None once that would be too close to
    the moment the hold lapses (or, for a lost pre-auth, past the time to resolve it)."""
    # the exponent is bounded: with the backoff at retry_max, attempts keep counting for as
    # long as the hold is valid, and 2**attempts would overflow a timedelta
    at = now + min(policy.retry_initial * (2 ** min(s.attempts, 30)), policy.retry_max)
    if s.state is State.AUTH_UNKNOWN or s.expires_at is None:
        limit = s.created_at + policy.resolve_auth_within
    else:
        limit = s.expires_at - policy.give_up_before_expiry
    return at if at < limit else None


def query(s: Session, now: datetime, policy: Policy) -> Transition:
    """Ask the terminal what it holds and what it did last (never repeat a command blindly)."""
    s = replace(s, timer=(TimerKind.ANSWER, now + policy.answer_timeout))
    return Transition(s, (c.QueryOpenPreauths(f"{s.id}:query:{s.attempts}", s.id, s.terminal),))


def expiry_timer(s: Session, now: datetime, policy: Policy) -> tuple[TimerKind, datetime]:
    expires = s.expires_at or now + policy.validity.default
    return TimerKind.EXPIRY, max(now, expires - policy.stop_before_expiry)


def charging_timer(s: Session, now: datetime, policy: Policy) -> tuple[TimerKind, datetime]:
    """A charge's deadline: the hold's validity, or sooner the EVSE's meter-silence deadline
    counted from the last reading (a charger gone silent must not keep the hold for days)."""
    expiry = expiry_timer(s, now, policy)
    silence = policy.meter_silence.get(s.evse)
    readings = s.metering.readings
    if silence is None or not readings:
        return expiry
    quiet = readings[-1].at + silence
    return (TimerKind.SILENCE, quiet) if quiet < expiry[1] else expiry


def finish(s: Session) -> Transition:
    s = replace(s, timer=None)
    return Transition(s, outcome(s))


def outcome(s: Session) -> tuple[c.Command, ...]:
    return (c.Enqueue(f"{s.id}:outcome", f"session:{s.id}", "session.outcome", outcome_payload(s)),)


def outcome_payload(s: Session) -> dict[str, Any]:
    """The one upstream outcome message of a finished session (the OCPI layer maps it to a
    Financial Advice Confirmation)."""
    return {
        "session_id": s.id,
        "authorization_reference": s.reference,
        # a session waiting only for its receipt has its money outcome: completed
        "state": State.COMPLETED.value if s.state is State.RECEIPTING else s.state.value,
        "currency": s.currency,
        "authorized_minor": s.authorized_minor,
        "captured_minor": s.captured_minor,
        "released_minor": s.released_minor,
        "open_minor": s.open_minor,
        "owed_minor": s.bill.owed_minor,
        "shortfall_minor": s.bill.shortfall_minor,
        "unpaid_energy_wh": s.bill.unpaid_energy_wh,
        "unpaid_minor": s.bill.unpaid_minor,
        "debt_only": False,  # the session's outcome (a late debt's own message says True)
        "price_minor": s.bill.price_minor,
        "price_excl": s.bill.price_excl,
        "energy_wh": s.metering.billed_energy_wh,
        "ref": s.ref,
        "ref_display": s.shown(s.ref),  # as the terminal's slip prints it (ZVT: 0042)
        "terminal": s.terminal,
        "evse": s.evse,
        "card": dict(s.card),
        "notes": list(s.notes),
        "discrepancies": list(s.discrepancies),
        "invoicer": s.invoice.invoicer,
        "invoice_reference": s.invoice.invoice_reference,
        # the receipt's invoice and fiscal lines, when it was printed before the outcome went up
        "receipt": [
            line for line in s.invoice.receipt_upstream if not line.startswith("Receipt: ")
        ],
    }
