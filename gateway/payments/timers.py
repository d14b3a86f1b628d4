"""Deadlines and restarts: what each timer means when it fires, and what a restart re-asks.

Every open session has one timer (its next action and deadline). After a restart nothing that
was in flight at the terminal is repeated: the terminal is asked. The charger is told again
what it may not have heard (an authorisation, a stop): the same message, which it takes once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.errors import InvariantViolated
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.authorization import authorize
from gateway.payments.capture import release_all
from gateway.payments.charging import (
    after_topup,
    ask_state,
    silent,
    stop,
    stop_unconfirmed,
    stopped_awaiting_topup,
)
from gateway.payments.events import TimerKind
from gateway.payments.lost_settlement import enquiry_failed
from gateway.payments.model import Session, replace_hold
from gateway.payments.moves import UNKNOWN_STATES, Transition, go, note, query
from gateway.payments.policy import Policy
from gateway.payments.receipts import fiscal_timeout
from gateway.payments.settlement import settle_command
from gateway.payments.states import State, Trigger
from gateway.payments.topups import topup_lost, topup_resumed

_ASKED = (State.AUTHORIZING, State.CAPTURING, State.RELEASING)  # a terminal command is out


def timer_fired(s: Session, ev: e.TimerFired, now: datetime, policy: Policy) -> Transition:
    if s.timer is None or s.timer[0] != ev.kind or now < s.timer[1]:
        return Transition(s, note="stale timer")
    kind = TimerKind(ev.kind)
    if kind == TimerKind.START and s.state is State.AUTHORIZED:
        why = "charging did not start in time"
        stop_cmd = c.StopCharger(f"{s.id}:stop:start-timeout", s.id, s.evse, why)
        s = go(s, Trigger.NOT_STARTED, notes=note(s, why))
        done = settle_command(release_all(s), now, policy)
        return Transition(done.session, (stop_cmd, *done.commands))
    if kind == TimerKind.EXPIRY and s.state is State.CHARGING:
        return stop(s, now, policy, "hold validity ends soon")
    if kind == TimerKind.SILENCE and s.state is State.CHARGING:
        return ask_state(s, now, policy)
    if kind == TimerKind.STATE and s.state is State.CHARGING:
        return silent(s, now, policy)
    if kind == TimerKind.STOP and s.state is State.STOPPING:
        return stop_unconfirmed(s, now, policy)
    if kind == TimerKind.RETRY and s.state in (State.CAPTURE_RETRY, State.RELEASE_RETRY):
        return settle_command(go(s, Trigger.RETRY), now, policy)
    if kind == TimerKind.QUERY and s.state in UNKNOWN_STATES:
        return query(s, now, policy)
    if kind == TimerKind.FISCAL and s.state is State.RECEIPTING:
        return fiscal_timeout(s, now, policy)
    if kind == TimerKind.ANSWER:
        if s.state in _ASKED:
            why = f"no answer from the terminal in {s.state}"
            return query(go(s, Trigger.LOST, notes=note(s, why)), now, policy)
        if s.state is State.TOPPING_UP or (s.state is State.STOPPING and s.topup_minor):
            return after_topup(topup_lost(s, ev.event_id, now, policy), now, policy)
        if s.state in UNKNOWN_STATES:
            return enquiry_failed(s, now, policy)
    raise InvariantViolated(f"session {s.id}: timer {kind} armed in {s.state}")


def resumed(s: Session, now: datetime, policy: Policy) -> Transition:
    """After a restart: ask the terminal about anything that was in flight, never repeat a
    terminal command. The charger is told again what it may not have heard (authorize, stop):
    the same message, which it takes once."""
    if s.state in _ASKED:
        return query(go(s, Trigger.LOST), now, policy)
    if s.state in UNKNOWN_STATES:
        return query(forget_absences(s), now, policy)
    if s.state is State.TOPPING_UP:  # its fate is unknown: keep the old holds as the cap
        return after_topup(topup_resumed(s, now, policy), now, policy)
    if stopped_awaiting_topup(s):  # the charge has ended: only the top-up's fate is open
        return after_topup(topup_resumed(s, now, policy), now, policy)
    if s.state is State.STOPPING:
        reason = s.stop_reason or "resume"
        return Transition(s, (c.StopCharger(f"{s.id}:stop:resume", s.id, s.evse, reason),))
    if s.state is State.AUTHORIZED:  # the authorisation may have died with the process
        return Transition(s, (authorize(s, policy, repeat=True),))
    return Transition(s)


def forget_absences(s: Session) -> Session:
    """A restart starts the two-list count of a lost release again (``lost_settlement``): both
    lists must come from one run. After a kill a serial line may still carry the dead run's
    frames, and a clock set at boot may jump forward, so the list asked at the resume, seconds
    after the last run's first absence, must not count as the second."""
    hold = s.current
    if hold is None or hold.absent_since is None:
        return s
    return replace_hold(s, hold, replace(hold, absent_since=None))
