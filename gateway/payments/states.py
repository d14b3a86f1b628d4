"""The session's states and its transition table: the one place that says which state may
follow which, and why.

The transition function (``session.py``) names a *trigger* for every change of state and asks
``next_state`` where it leads; a change that is not a row here is a bug and raises
``InvariantViolated``. The README's diagram is generated from ``TRANSITIONS`` (``mermaid()``)
and a test fails when the two differ — the table cannot drift from the code again.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from gateway.errors import InvariantViolated


class State(StrEnum):
    AUTHORIZING = "authorizing"
    AUTH_UNKNOWN = "auth_unknown"
    AUTHORIZED = "authorized"
    CHARGING = "charging"
    TOPPING_UP = "topping_up"
    STOPPING = "stopping"
    CAPTURING = "capturing"
    CAPTURE_UNKNOWN = "capture_unknown"
    CAPTURE_RETRY = "capture_retry"
    RELEASING = "releasing"
    RELEASE_UNKNOWN = "release_unknown"
    RELEASE_RETRY = "release_retry"
    RECEIPTING = "receipting"  # captured; the receipt waits briefly for the CPO's fiscal signature
    COMPLETED = "completed"
    VOIDED = "voided"
    DECLINED = "declined"
    FAILED = "failed"
    CAPTURE_FAILED = "capture_failed"  # the hold lapsed uncaptured: the price is owed
    CAPTURE_UNCONFIRMED = "capture_unconfirmed"  # no evidence either way: owed until reconciled
    RELEASE_FAILED = "release_failed"  # not released before it lapsed: the issuer lets it go


FINAL = frozenset(
    {
        State.COMPLETED,
        State.VOIDED,
        State.DECLINED,
        State.FAILED,
        State.CAPTURE_FAILED,
        State.CAPTURE_UNCONFIRMED,
        State.RELEASE_FAILED,
    }
)

# Open states that no longer occupy the EVSE: the next driver may start there.
EVSE_FREE = frozenset({State.RECEIPTING})

# States in which a terminal command of the session may be running.
IN_FLIGHT = frozenset({State.AUTHORIZING, State.TOPPING_UP, State.CAPTURING, State.RELEASING})

# States whose every hold has a reference: a hold that cannot be settled is never accepted.
HOLDING = frozenset(
    {
        State.AUTHORIZED,
        State.CHARGING,
        State.TOPPING_UP,
        State.STOPPING,
        State.CAPTURING,
        State.CAPTURE_UNKNOWN,
        State.CAPTURE_RETRY,
        State.RELEASING,
        State.RELEASE_UNKNOWN,
        State.RELEASE_RETRY,
    }
)


class Trigger(StrEnum):
    """Why a session changes state; the value is the diagram's label."""

    CARD = "card presented / Preauthorize(hold)"
    ORPHAN = "sweep found an orphan hold / Release"
    UNPRICEABLE = "no tariff the terminal can charge in / no hold"
    APPROVED = "approved with a receipt / AuthorizeCharger(cap)"
    APPROVED_LOW = "approved below the minimum / Release"
    DECLINED = "declined, aborted"
    REFUSED = "busy, error"
    LOST = "refused, lost, no answer, restart / ask terminal"
    LATE_APPROVAL = "late approval / Release"
    ADOPTED = "our hold found by its data / Release"
    NO_HOLD = "no hold attributable to us"
    CANCEL_BY_REFERENCE = "outcome never known, acquirer online / Release by our reference"
    UNREACHABLE = "terminal unreachable past the deadline"
    STARTED = "charger started"
    NOT_STARTED = "start timeout, stopped, fault / Release"
    TOP_UP = "cost near hold, terminal can top up / TopUp"
    TOPPED_UP = "top-up approved, refused or lost"
    CAP = "cost reaches cap, hold expiry near / StopCharger"
    BILL = "stopped, fault, stop timeout / Capture(price)"
    NOTHING_TO_BILL = "no energy / Release"
    STILL_OPEN = "hold still open / backoff"
    RETRY = "retry timer"
    NEXT_CAPTURE = "hold settled, next to capture / Capture"
    NEXT_RELEASE = "hold settled, next to release / Release"
    ALL_CAPTURED = "all holds settled"
    ALL_RELEASED = "all holds released"
    CAPTURE_LAPSED = "hold about to lapse uncaptured"
    CAPTURE_UNPROVEN = "no evidence of the capture"
    RELEASE_LAPSED = "hold about to lapse unreleased"
    AWAIT_FISCAL = "all captured, receipt needs the CPO's signature / wait"
    FISCAL_SIGNED = "fiscal data arrived / ShowReceipt"
    FISCAL_TIMEOUT = "no fiscal data in time / ShowReceipt(pending)"
    EVIDENCE_CAPTURED = "end-of-day totals show the capture / outcome"
    EVIDENCE_NOT_CAPTURED = "end-of-day totals show no capture / outcome"
    CAPTURE_UNDONE = "acquirer: CAPTURE_FAILED after the booked CAPTURE / corrected outcome"


S, T = State, Trigger

# Where a settlement step (one hold captured, released or given up) can lead: the next hold,
# or the session's final state, summarised from all its holds.
_SETTLING = (S.CAPTURING, S.RELEASING, S.CAPTURE_UNKNOWN, S.RELEASE_UNKNOWN)
_SETTLED = {
    T.NEXT_CAPTURE: S.CAPTURING,
    T.NEXT_RELEASE: S.RELEASING,
    T.ALL_CAPTURED: S.COMPLETED,
    T.AWAIT_FISCAL: S.RECEIPTING,
    T.ALL_RELEASED: S.VOIDED,
    T.CAPTURE_LAPSED: S.CAPTURE_FAILED,
    T.CAPTURE_UNPROVEN: S.CAPTURE_UNCONFIRMED,
    T.RELEASE_LAPSED: S.RELEASE_FAILED,
}

TRANSITIONS: Mapping[tuple[State | None, Trigger], State] = {
    (None, T.CARD): S.AUTHORIZING,
    (None, T.ORPHAN): S.RELEASING,
    (None, T.UNPRICEABLE): S.FAILED,
    (S.AUTHORIZING, T.APPROVED): S.AUTHORIZED,
    (S.AUTHORIZING, T.APPROVED_LOW): S.RELEASING,
    (S.AUTHORIZING, T.DECLINED): S.DECLINED,
    (S.AUTHORIZING, T.REFUSED): S.FAILED,
    (S.AUTHORIZING, T.LOST): S.AUTH_UNKNOWN,
    (S.AUTH_UNKNOWN, T.LATE_APPROVAL): S.RELEASING,
    (S.AUTH_UNKNOWN, T.ADOPTED): S.RELEASING,
    (S.AUTH_UNKNOWN, T.NO_HOLD): S.FAILED,
    (S.AUTH_UNKNOWN, T.CANCEL_BY_REFERENCE): S.RELEASING,
    (S.AUTH_UNKNOWN, T.UNREACHABLE): S.FAILED,
    (S.AUTHORIZED, T.STARTED): S.CHARGING,
    (S.AUTHORIZED, T.NOT_STARTED): S.RELEASING,
    (S.CHARGING, T.TOP_UP): S.TOPPING_UP,
    (S.CHARGING, T.CAP): S.STOPPING,
    (S.CHARGING, T.BILL): S.CAPTURING,
    (S.CHARGING, T.NOTHING_TO_BILL): S.RELEASING,
    (S.TOPPING_UP, T.TOPPED_UP): S.CHARGING,
    (S.TOPPING_UP, T.CAP): S.STOPPING,
    (S.TOPPING_UP, T.BILL): S.CAPTURING,
    (S.TOPPING_UP, T.NOTHING_TO_BILL): S.RELEASING,
    (S.STOPPING, T.BILL): S.CAPTURING,
    (S.STOPPING, T.NOTHING_TO_BILL): S.RELEASING,
    (S.CAPTURING, T.LOST): S.CAPTURE_UNKNOWN,
    (S.CAPTURE_UNKNOWN, T.STILL_OPEN): S.CAPTURE_RETRY,
    (S.CAPTURE_RETRY, T.RETRY): S.CAPTURING,
    (S.RELEASING, T.LOST): S.RELEASE_UNKNOWN,
    (S.RELEASE_UNKNOWN, T.STILL_OPEN): S.RELEASE_RETRY,
    (S.RELEASE_RETRY, T.RETRY): S.RELEASING,
    (S.RECEIPTING, T.FISCAL_SIGNED): S.COMPLETED,
    (S.RECEIPTING, T.FISCAL_TIMEOUT): S.COMPLETED,
    **{(source, trigger): target for source in _SETTLING for trigger, target in _SETTLED.items()},
    (S.CAPTURE_UNCONFIRMED, T.EVIDENCE_CAPTURED): S.COMPLETED,
    (S.CAPTURE_UNCONFIRMED, T.EVIDENCE_NOT_CAPTURED): S.CAPTURE_FAILED,
    (S.COMPLETED, T.CAPTURE_UNDONE): S.CAPTURE_FAILED,
}

# The only ways out of a final state: an unconfirmed capture decided later by the terminal's
# own evidence (``evidence.py``); its outcome waits for that decision (``settlement.py``); and a
# booked capture the acquirer reports failed after all (``capture_undone.py``).
LATE_EVIDENCE = frozenset(
    {
        (S.CAPTURE_UNCONFIRMED, T.EVIDENCE_CAPTURED),
        (S.CAPTURE_UNCONFIRMED, T.EVIDENCE_NOT_CAPTURED),
        (S.COMPLETED, T.CAPTURE_UNDONE),
    }
)


def next_state(state: State | None, trigger: Trigger) -> State:
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise InvariantViolated(
            f"no transition from {state} on {trigger.name}: not in the table"
        ) from None


def mermaid() -> str:
    """The README's state diagram, generated from the table."""
    lines = ["stateDiagram-v2"]
    for (source, trigger), target in TRANSITIONS.items():
        lines.append(f"    {source.value if source else '[*]'} --> {target.value}: {trigger.value}")
    lines += [f"    {state.value} --> [*]" for state in State if state in FINAL]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m gateway.payments.states: the diagram for the README
    print(mermaid())  # noqa: T201 - the command's output
