"""The charging-session payment state machine: ``transition(session, event, now, policy)``
gives the new session and the commands to run. Pure: no I/O, no clock, no randomness.

| state           | event                                   | next            | commands                          |
|-----------------|-----------------------------------------|-----------------|-----------------------------------|
| (none)          | CardPresented                           | AUTHORIZING     | Preauthorize(hold)                |
| AUTHORIZING     | preauthorize APPROVED, ≥ min partial    | AUTHORIZED      | AuthorizeCharger(cap); timer start|
| AUTHORIZING     | preauthorize APPROVED, < min partial    | RELEASING       | Release                           |
| AUTHORIZING     | preauthorize DECLINED/ABORTED/BUSY/ERROR| DECLINED/FAILED | outcome upstream                  |
| AUTHORIZING     | preauthorize UNKNOWN; Resumed           | AUTH_UNKNOWN    | QueryOpenPreauths                 |
| AUTH_UNKNOWN    | open pre-auths: an orphan receipt       | RELEASING       | Release(orphan)                   |
| AUTH_UNKNOWN    | open pre-auths: no orphan               | FAILED          | outcome upstream                  |
| AUTHORIZED      | ChargerStarted                          | CHARGING        | timer hold expiry                 |
| AUTHORIZED      | start timer; ChargerStopped/Faulted     | RELEASING       | Release                           |
| CHARGING        | MeterValue, cost < cap                  | CHARGING        | (TopUp when incremental)          |
| CHARGING        | MeterValue, cost ≥ cap; hold expiry     | STOPPING        | StopCharger; timer stop           |
| TOPPING_UP      | topup result                            | CHARGING        | -                                 |
| CHARGING/STOPPING/TOPPING_UP | ChargerStopped; stop timer | CAPTURING/RELEASING | Capture(min(price,hold))/Release |
| CHARGING/STOPPING/TOPPING_UP | ChargerFaulted             | CAPTURING/RELEASING | StopCharger; Capture(last trusted) |
| CAPTURING       | capture APPROVED                        | COMPLETED       | outcome upstream; receipt         |
| CAPTURING       | capture failed, time left               | CAPTURE_RETRY   | timer retry (backoff)             |
| CAPTURING       | capture failed, hold about to expire    | CAPTURE_FAILED  | outcome upstream                  |
| CAPTURING       | capture UNKNOWN; Resumed                | CAPTURE_UNKNOWN | QueryOpenPreauths                 |
| CAPTURE_UNKNOWN | receipt still open / not open           | CAPTURING / COMPLETED | Capture / outcome           |
| CAPTURE_RETRY   | retry timer                             | CAPTURING       | Capture (same key, same amount)   |
| RELEASING …     | (as CAPTURING, with Release)            | VOIDED / RELEASE_FAILED | outcome upstream          |

Money invariant in every final state: captured + released == authorized (a hold that could
not be captured or released in time lapses at the issuer and is counted as released, with
the failure reported upstream). The capture is the tariff price of the trusted energy and
time, never above the hold.

Which energy is billed (the documented rule when sources disagree): the meter's stop reading,
else the last trusted (signed) meter value, else the charger's own session total, else the
last unsigned value; a difference above the tolerance between the billed value and the
charger's total is recorded in ``notes`` for reconciliation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import Outcome
from gateway.errors import InvariantViolated
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.preauth import HoldPolicy, initial_hold, topup
from gateway.payments.tariff import Sample, Tariff, price


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
    COMPLETED = "completed"
    VOIDED = "voided"
    DECLINED = "declined"
    FAILED = "failed"
    CAPTURE_FAILED = "capture_failed"
    RELEASE_FAILED = "release_failed"


FINAL = frozenset(
    {State.COMPLETED, State.VOIDED, State.DECLINED, State.FAILED, State.CAPTURE_FAILED, State.RELEASE_FAILED}
)


@dataclass(frozen=True, slots=True)
class Policy:
    hold: HoldPolicy
    tariffs: dict[str, Tariff]  # by EVSE id; "*" is the site default
    tz: ZoneInfo
    catalog: dict[str, Tariff] = field(default_factory=dict)  # every tariff ever in force, by id
    start_timeout: timedelta = timedelta(minutes=3)
    stop_timeout: timedelta = timedelta(seconds=60)
    hold_validity: timedelta = timedelta(days=5)
    stop_before_expiry: timedelta = timedelta(hours=24)
    give_up_before_expiry: timedelta = timedelta(hours=1)
    retry_initial: timedelta = timedelta(seconds=30)
    retry_max: timedelta = timedelta(minutes=30)
    safety_margin_minor: int = 50
    min_partial_minor: int = 500
    energy_tolerance_wh: int = 10

    def tariff(self, evse: str) -> Tariff | None:
        return self.tariffs.get(evse) or self.tariffs.get("*")

    def pinned(self, session: Session) -> Tariff | None:
        """The tariff a session started with (a tariff change mid-session never reprices it)."""
        if session.tariff_id is not None:
            found = self.catalog.get(session.tariff_id)
            if found is not None:
                return found
            current = self.tariff(session.evse)
            if current is not None and current.id == session.tariff_id:
                return current
        return self.tariff(session.evse)


@dataclass(frozen=True, slots=True)
class Reading:
    at: datetime
    energy_wh: int  # since the charge started
    trusted: bool


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    evse: str
    terminal: str
    currency: str
    state: State
    created_at: datetime
    hold_minor: int = 0
    authorized_minor: int = 0
    captured_minor: int = 0
    released_minor: int = 0
    price_minor: int = 0
    price_excl: str = "0"  # the price before taxes (Decimal text), for the upstream tax split
    reference: str | None = None  # OCPI authorization_reference, set at approval
    receipt_no: int | None = None
    card: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None
    meter_start_wh: int | None = None
    readings: tuple[Reading, ...] = ()
    billed_energy_wh: int = 0
    timer: tuple[str, datetime] | None = None
    attempts: int = 0
    topup_refused: bool = False
    topup_minor: int = 0
    stop_reason: str | None = None
    notes: tuple[str, ...] = ()
    fiscal: tuple[str, ...] = ()
    tariff_id: str | None = None  # pinned when the session starts
    invoicer: str | None = None  # "cpo" / "ptp" from the CDR (OCPI flow); None: the local flow
    invoice_reference: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def next_deadline(self) -> datetime | None:
        return self.timer[1] if self.timer else None


@dataclass(frozen=True, slots=True)
class Transition:
    session: Session | None
    commands: tuple[c.Command, ...] = ()
    note: str = ""


def authorization_reference(session_id: str) -> str:
    """CiString(36), unique per session and stable across restarts (derived, never random)."""
    return f"EVP-{session_id}"[:36]


def transition(session: Session | None, event: e.Event, now: datetime, policy: Policy) -> Transition:
    if session is None:
        if isinstance(event, e.CardPresented):
            return _start(event, now, policy)
        if isinstance(event, e.OrphanFound):
            return _orphan(event, now, policy)
        return Transition(None, note="no such session")
    if session.final:
        if isinstance(event, e.FiscalDataArrived):
            return _fiscal(session, event)
        return Transition(session, note="final: ignored")
    match event:
        case e.TerminalResultArrived():
            return _terminal_result(session, event, now, policy)
        case e.OpenPreauthsReported():
            return _open_preauths(session, event, now, policy)
        case e.ChargerStarted():
            return _charger_started(session, event, now, policy)
        case e.MeterValue():
            return _meter_value(session, event, now, policy)
        case e.ChargerStopped():
            return _charger_stopped(session, event, now, policy)
        case e.ChargerFaulted():
            return _charger_faulted(session, event, policy)
        case e.TimerFired():
            return _timer(session, event, now, policy)
        case e.Resumed():
            return _resumed(session)
        case e.FiscalDataArrived():
            return _fiscal(session, event)
    return Transition(session, note="ignored")


# ---- handlers ------------------------------------------------------------------------------


def _start(ev: e.CardPresented, now: datetime, policy: Policy) -> Transition:
    tariff = policy.tariff(ev.evse)
    hold = initial_hold(policy.hold, ev.currency, tariff, ev.target, now, policy.tz)
    s = Session(ev.session_id, ev.evse, ev.terminal, ev.currency, State.AUTHORIZING, now, hold_minor=hold,
                tariff_id=tariff.id if tariff else None)  # fmt: skip
    ref = s.id[:16]  # the terminal's BMP60 reference: short, tied to the session
    return Transition(s, (c.Preauthorize(f"{s.id}:preauth", s.id, s.terminal, hold, s.currency, ref),))


def _orphan(ev: e.OrphanFound, now: datetime, policy: Policy) -> Transition:
    """A hold open at the terminal that no open session owns (its result was lost and its
    session ended without it): release it. Its amount is unknown here, so it is booked as 0."""
    s = Session(
        ev.session_id,
        "-",
        ev.terminal,
        ev.currency,
        State.RELEASING,
        now,
        receipt_no=ev.receipt_no,
        expires_at=now + policy.hold_validity,
        notes=("orphan hold found by the terminal sweep",),
    )
    return _release(s)


def _terminal_result(s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy) -> Transition:
    if ev.operation == "preauthorize" and s.state is State.AUTHORIZING:
        return _preauth_result(s, ev, now, policy)
    if ev.operation == "topup" and s.topup_minor and s.state in (State.TOPPING_UP, State.STOPPING):
        state = State.CHARGING if s.state is State.TOPPING_UP else s.state
        if ev.outcome is Outcome.APPROVED:  # counted even if the cap already stopped the charge
            added = ev.amount_minor if ev.amount_minor is not None else s.topup_minor
            return Transition(replace(s, state=state, authorized_minor=s.authorized_minor + added, topup_minor=0))
        return Transition(replace(s, state=state, topup_refused=True, topup_minor=0), note="top-up refused")
    if ev.operation == "capture" and s.state is State.CAPTURING:
        return _money_result(s, ev, capture=True)
    if ev.operation == "release" and s.state is State.RELEASING:
        return _money_result(s, ev, capture=False)
    return Transition(s, note=f"{ev.operation} result in {s.state}: ignored")


def _preauth_result(s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy) -> Transition:
    if ev.outcome is Outcome.APPROVED:
        approved = ev.amount_minor if ev.amount_minor is not None else s.hold_minor
        s = replace(
            s,
            authorized_minor=approved,
            receipt_no=ev.receipt_no,
            card=dict(ev.card),
            reference=authorization_reference(s.id),
            expires_at=now + policy.hold_validity,
        )
        if approved < min(policy.min_partial_minor, s.hold_minor):
            return _release(replace(s, notes=(*s.notes, f"partial approval {approved} below minimum")))
        cap = max(0, approved - policy.safety_margin_minor)
        s = replace(s, state=State.AUTHORIZED, timer=("start", now + policy.start_timeout))
        return Transition(s, (c.AuthorizeCharger(f"{s.id}:authorize", s.id, s.evse, cap, s.currency),))
    if ev.outcome is Outcome.UNKNOWN:
        return _query(replace(s, state=State.AUTH_UNKNOWN))
    state = State.DECLINED if ev.outcome in (Outcome.DECLINED, Outcome.ABORTED) else State.FAILED
    return _finish(replace(s, state=state, notes=(*s.notes, f"{ev.outcome}: {ev.message}")))


def _money_result(s: Session, ev: e.TerminalResultArrived, *, capture: bool) -> Transition:
    if ev.outcome is Outcome.APPROVED:
        if capture:
            captured = min(ev.amount_minor if ev.amount_minor is not None else s.price_minor, s.authorized_minor)
            note = () if captured == min(s.price_minor, s.authorized_minor) else (f"partial capture {captured}",)
            done = _finish(
                replace(
                    s,
                    state=State.COMPLETED,
                    captured_minor=captured,
                    released_minor=s.authorized_minor - captured,
                    notes=(*s.notes, *note),
                )
            )
            if not s.fiscal:
                return done
            receipt = c.ShowReceipt(f"{s.id}:receipt:capture", s.id, s.terminal, s.fiscal)  # fiscal data came first
            return Transition(done.session, (*done.commands, receipt))
        return _finish(replace(s, state=State.VOIDED, released_minor=s.authorized_minor))
    # Declined, refused or lost: ask the terminal whether the hold is still open before anything else.
    s = replace(s, notes=(*s.notes, f"{ev.operation} {ev.outcome}: {ev.message}"))
    return _query(replace(s, state=State.CAPTURE_UNKNOWN if capture else State.RELEASE_UNKNOWN))


def _next_try(s: Session, now: datetime, policy: Policy) -> datetime | None:
    """When to try again (exponential backoff), or None once that would be too close to the
    moment the hold lapses at the issuer."""
    at = now + min(policy.retry_initial * (2**s.attempts), policy.retry_max)
    limit = (s.expires_at or s.created_at + policy.hold_validity) - policy.give_up_before_expiry
    return at if at < limit else None


def _retry_or_fail(s: Session, now: datetime, policy: Policy, *, capture: bool) -> Transition:
    at = _next_try(s, now, policy)
    if at is None:
        failed = State.CAPTURE_FAILED if capture else State.RELEASE_FAILED
        # The hold lapses at the issuer: nothing captured, all of it counted as released.
        return _finish(replace(s, state=failed, released_minor=s.authorized_minor, captured_minor=0))
    retry = State.CAPTURE_RETRY if capture else State.RELEASE_RETRY
    return Transition(replace(s, state=retry, attempts=s.attempts + 1, timer=("retry", at)))


def _open_preauths(s: Session, ev: e.OpenPreauthsReported, now: datetime, policy: Policy) -> Transition:
    if s.state not in (State.AUTH_UNKNOWN, State.CAPTURE_UNKNOWN, State.RELEASE_UNKNOWN):
        return Transition(s, note="open pre-auths: not waiting for them")
    if ev.failed:
        at = _next_try(s, now, policy)
        if at is None:
            return _finish(
                replace(
                    s,
                    state=State.FAILED,
                    released_minor=s.authorized_minor,
                    captured_minor=0,
                    notes=(*s.notes, "terminal unreachable until the hold lapsed"),
                )
            )
        return Transition(replace(s, attempts=s.attempts + 1, timer=("query", at)))
    if s.state is State.AUTH_UNKNOWN:
        if ev.orphans:  # our pre-auth went through but its result was lost: give the money back
            s = replace(
                s,
                receipt_no=ev.orphans[0],
                authorized_minor=s.hold_minor,
                expires_at=now + policy.hold_validity,
                notes=(*s.notes, "orphan pre-auth released"),
            )
            return _release(s)
        return _finish(replace(s, state=State.FAILED, notes=(*s.notes, "no pre-authorisation was made")))
    still_open = s.receipt_no in ev.receipts
    if s.state is State.CAPTURE_UNKNOWN:
        if still_open:
            return _retry_or_fail(s, now, policy, capture=True)
        return _finish(
            replace(
                s,
                state=State.COMPLETED,
                captured_minor=min(s.price_minor, s.authorized_minor),
                released_minor=s.authorized_minor - min(s.price_minor, s.authorized_minor),
                notes=(*s.notes, "capture confirmed by open pre-auth enquiry"),
            )
        )
    if still_open:
        return _retry_or_fail(s, now, policy, capture=False)
    return _finish(
        replace(
            s,
            state=State.VOIDED,
            released_minor=s.authorized_minor,
            notes=(*s.notes, "release confirmed by open pre-auth enquiry"),
        )
    )


def _charger_started(s: Session, ev: e.ChargerStarted, now: datetime, policy: Policy) -> Transition:
    if s.state is not State.AUTHORIZED:
        return Transition(s, note="charger started: not expected")
    stop_at = (s.expires_at or now + policy.hold_validity) - policy.stop_before_expiry
    return Transition(
        replace(
            s,
            state=State.CHARGING,
            meter_start_wh=ev.meter_wh,
            readings=(Reading(now, 0, True),),
            timer=("expiry", stop_at),
        )
    )


def _meter_value(s: Session, ev: e.MeterValue, now: datetime, policy: Policy) -> Transition:
    if s.state not in (State.CHARGING, State.TOPPING_UP, State.STOPPING) or s.meter_start_wh is None:
        return Transition(s, note="meter value: not charging")
    energy = ev.meter_wh - s.meter_start_wh
    if s.readings and (now < s.readings[-1].at or energy < s.readings[-1].energy_wh):
        return Transition(s, note="meter value out of order: ignored")
    s = replace(s, readings=(*s.readings, Reading(now, energy, ev.trusted)))
    s = _price(s, s.readings, policy)
    if s.state is State.STOPPING:
        return Transition(s)
    if s.price_minor >= s.authorized_minor - policy.safety_margin_minor:
        if s.state is State.CHARGING and not s.topup_refused:
            extra = topup(policy.hold, s.authorized_minor, s.price_minor)
            if extra and s.receipt_no is not None:
                return _topup(s, extra)
        return _stop(s, now, policy, "cost cap reached")
    if s.state is State.CHARGING and not s.topup_refused and s.receipt_no is not None:
        extra = topup(policy.hold, s.authorized_minor, s.price_minor)
        if extra:
            return _topup(s, extra)
    return Transition(s)


def _charger_stopped(s: Session, ev: e.ChargerStopped, now: datetime, policy: Policy) -> Transition:
    if s.state is State.AUTHORIZED:
        return _release(replace(s, stop_reason=ev.reason, notes=(*s.notes, "charging never started")))
    if s.state not in (State.CHARGING, State.TOPPING_UP, State.STOPPING) or s.meter_start_wh is None:
        return Transition(s, note="charger stopped: not charging")
    energy, notes = _billed_energy(s, ev, policy)
    readings = (*s.readings, Reading(max(now, s.readings[-1].at), energy, True))
    s = replace(s, stop_reason=s.stop_reason or ev.reason, notes=(*s.notes, *notes), invoicer=ev.invoicer,
                invoice_reference=ev.invoice_reference)  # fmt: skip
    return _finalize(s, readings, policy)


def _charger_faulted(s: Session, ev: e.ChargerFaulted, policy: Policy) -> Transition:
    if s.state is State.AUTHORIZED:
        return _release(replace(s, stop_reason=ev.reason))
    if s.state not in (State.CHARGING, State.TOPPING_UP, State.STOPPING):
        return Transition(s, note="fault: not charging")
    trusted = tuple(r for r in s.readings if r.trusted) or s.readings[:1]
    stop = c.StopCharger(f"{s.id}:stop:fault", s.id, s.evse, ev.reason)
    done = _finalize(
        replace(s, stop_reason=ev.reason, notes=(*s.notes, f"billed to last trusted reading: {ev.reason}")),
        trusted,
        policy,
    )
    return Transition(done.session, (stop, *done.commands))


def _timer(s: Session, ev: e.TimerFired, now: datetime, policy: Policy) -> Transition:
    if s.timer is None or s.timer[0] != ev.kind or now < s.timer[1]:
        return Transition(s, note="stale timer")
    s = replace(s, timer=None)
    if ev.kind == "start" and s.state is State.AUTHORIZED:
        stop = c.StopCharger(f"{s.id}:stop:start-timeout", s.id, s.evse, "charging did not start in time")
        done = _release(replace(s, notes=(*s.notes, "charging did not start in time")))
        return Transition(done.session, (stop, *done.commands))
    if ev.kind == "expiry" and s.state in (State.CHARGING, State.TOPPING_UP):
        return _stop(s, now, policy, "hold validity ends soon")
    if ev.kind == "stop" and s.state is State.STOPPING:
        return _finalize(
            replace(s, notes=(*s.notes, "no stop confirmation: billed to last reading")),
            tuple(r for r in s.readings if r.trusted) or s.readings[:1],
            policy,
        )
    if ev.kind == "retry" and s.state is State.CAPTURE_RETRY:
        return _capture(s)
    if ev.kind == "retry" and s.state is State.RELEASE_RETRY:
        return _release(s)
    if ev.kind == "query" and s.state in (State.AUTH_UNKNOWN, State.CAPTURE_UNKNOWN, State.RELEASE_UNKNOWN):
        return _query(s)
    return Transition(s, note=f"timer {ev.kind} in {s.state}: nothing to do")


def _resumed(s: Session) -> Transition:
    """After a restart: ask the terminal about anything that was in flight."""
    if s.state is State.AUTHORIZING:
        return _query(replace(s, state=State.AUTH_UNKNOWN))
    if s.state is State.CAPTURING:
        return _query(replace(s, state=State.CAPTURE_UNKNOWN))
    if s.state is State.RELEASING:
        return _query(replace(s, state=State.RELEASE_UNKNOWN))
    if s.state in (State.AUTH_UNKNOWN, State.CAPTURE_UNKNOWN, State.RELEASE_UNKNOWN):
        return _query(s)
    if s.state is State.TOPPING_UP:  # its fate is unknown: keep the old hold as the cap
        return Transition(replace(s, state=State.CHARGING, topup_refused=True, topup_minor=0))
    if s.state is State.STOPPING:
        return Transition(s, (c.StopCharger(f"{s.id}:stop:resume", s.id, s.evse, s.stop_reason or "resume"),))
    return Transition(s)


def _fiscal(s: Session, ev: e.FiscalDataArrived) -> Transition:
    s = replace(s, fiscal=tuple(ev.lines))
    if s.state is State.COMPLETED:
        return Transition(s, (c.ShowReceipt(f"{s.id}:receipt:{ev.event_id}", s.id, s.terminal, tuple(ev.lines)),))
    return Transition(s)


# ---- building blocks --------------------------------------------------------------------------


def _price(s: Session, readings: tuple[Reading, ...], policy: Policy) -> Session:
    """The session with its price (incl. and excl. taxes) for these readings."""
    tariff = policy.pinned(s)
    if tariff is None or not readings:
        return replace(s, price_minor=0, price_excl="0")
    p = price(tariff, [Sample(r.at, r.energy_wh) for r in readings], policy.tz)
    return replace(s, price_minor=p.minor, price_excl=str(p.excl_vat))


def _billed_energy(s: Session, ev: e.ChargerStopped, policy: Policy) -> tuple[int, tuple[str, ...]]:
    start = s.meter_start_wh or 0
    trusted = [r for r in s.readings if r.trusted and r.energy_wh > 0]
    if ev.meter_wh is not None:
        energy = ev.meter_wh - start
    elif trusted:
        energy = trusted[-1].energy_wh
    elif ev.session_energy_wh is not None:
        energy = ev.session_energy_wh
    else:
        energy = s.readings[-1].energy_wh if s.readings else 0
    energy = max(energy, 0)
    notes: tuple[str, ...] = ()
    if ev.session_energy_wh is not None and abs(ev.session_energy_wh - energy) > policy.energy_tolerance_wh:
        notes = (f"energy disagreement: billed {energy} Wh, charger reported {ev.session_energy_wh} Wh",)
    return energy, notes


def _finalize(s: Session, readings: tuple[Reading, ...], policy: Policy) -> Transition:
    s = _price(
        replace(s, readings=readings, billed_energy_wh=readings[-1].energy_wh if readings else 0), readings, policy
    )
    if min(s.price_minor, s.authorized_minor) == 0:
        return _release(s)
    return _capture(replace(s, attempts=0))


def _receipt(s: Session) -> int:
    if s.receipt_no is None:
        raise InvariantViolated(f"session {s.id} in {s.state} has no receipt number")
    return s.receipt_no


def _capture(s: Session) -> Transition:
    amount = min(s.price_minor, s.authorized_minor)
    s = replace(s, state=State.CAPTURING, timer=None)
    return Transition(
        s,
        (
            c.Capture(
                f"{s.id}:capture",
                s.id,
                s.terminal,
                _receipt(s),
                s.authorized_minor,
                amount,
                s.currency,
                s.id[:16],
            ),
        ),
    )


def _release(s: Session) -> Transition:
    s = replace(s, state=State.RELEASING, timer=None)
    return Transition(s, (c.Release(f"{s.id}:release", s.id, s.terminal, _receipt(s), s.authorized_minor, s.currency),))


def _query(s: Session) -> Transition:
    return Transition(replace(s, timer=None), (c.QueryOpenPreauths(f"{s.id}:query:{s.attempts}", s.id, s.terminal),))


def _topup(s: Session, extra: int) -> Transition:
    receipt = _receipt(s)
    s = replace(s, state=State.TOPPING_UP, topup_minor=extra)
    return Transition(s, (c.TopUp(f"{s.id}:topup:{s.authorized_minor}", s.id, s.terminal, receipt, extra, s.currency),))


def _stop(s: Session, now: datetime, policy: Policy, reason: str) -> Transition:
    s = replace(s, state=State.STOPPING, stop_reason=reason, timer=("stop", now + policy.stop_timeout))
    return Transition(s, (c.StopCharger(f"{s.id}:stop", s.id, s.evse, reason),))


def _finish(s: Session) -> Transition:
    s = replace(s, timer=None)
    payload = outcome_payload(s)
    return Transition(s, (c.Enqueue(f"{s.id}:outcome", f"session:{s.id}", "session.outcome", payload),))


def outcome_payload(s: Session) -> dict[str, Any]:
    """The one upstream outcome message of a finished session (the OCPI layer maps it to a
    Financial Advice Confirmation)."""
    return {
        "session_id": s.id,
        "authorization_reference": s.reference,
        "state": s.state.value,
        "currency": s.currency,
        "authorized_minor": s.authorized_minor,
        "captured_minor": s.captured_minor,
        "released_minor": s.released_minor,
        "price_minor": s.price_minor,
        "price_excl": s.price_excl,
        "energy_wh": s.billed_energy_wh,
        "receipt_no": s.receipt_no,
        "terminal": s.terminal,
        "evse": s.evse,
        "card": dict(s.card),
        "notes": list(s.notes),
        "invoicer": s.invoicer,
        "invoice_reference": s.invoice_reference,
    }


# ---- persistence (plain JSON for the store) -------------------------------------------------


def to_json(s: Session) -> dict[str, Any]:
    return {
        "id": s.id,
        "evse": s.evse,
        "terminal": s.terminal,
        "currency": s.currency,
        "state": s.state.value,
        "created_at": s.created_at.isoformat(),
        "hold_minor": s.hold_minor,
        "authorized_minor": s.authorized_minor,
        "captured_minor": s.captured_minor,
        "released_minor": s.released_minor,
        "price_minor": s.price_minor,
        "price_excl": s.price_excl,
        "reference": s.reference,
        "receipt_no": s.receipt_no,
        "card": dict(s.card),
        "expires_at": s.expires_at.isoformat() if s.expires_at else None,
        "meter_start_wh": s.meter_start_wh,
        "readings": [[r.at.isoformat(), r.energy_wh, r.trusted] for r in s.readings],
        "billed_energy_wh": s.billed_energy_wh,
        "timer": [s.timer[0], s.timer[1].isoformat()] if s.timer else None,
        "attempts": s.attempts,
        "topup_refused": s.topup_refused,
        "topup_minor": s.topup_minor,
        "stop_reason": s.stop_reason,
        "notes": list(s.notes),
        "fiscal": list(s.fiscal),
        "tariff_id": s.tariff_id,
        "invoicer": s.invoicer,
        "invoice_reference": s.invoice_reference,
    }


def from_json(d: dict[str, Any]) -> Session:
    def when(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text) if text else None

    created = datetime.fromisoformat(d["created_at"])
    return Session(
        id=d["id"],
        evse=d["evse"],
        terminal=d["terminal"],
        currency=d["currency"],
        state=State(d["state"]),
        created_at=created,
        hold_minor=d["hold_minor"],
        authorized_minor=d["authorized_minor"],
        captured_minor=d["captured_minor"],
        released_minor=d["released_minor"],
        price_minor=d["price_minor"],
        price_excl=d.get("price_excl", "0"),
        reference=d["reference"],
        receipt_no=d["receipt_no"],
        card=dict(d["card"]),
        expires_at=when(d["expires_at"]),
        meter_start_wh=d["meter_start_wh"],
        readings=tuple(Reading(datetime.fromisoformat(at), wh, trusted) for at, wh, trusted in d["readings"]),
        billed_energy_wh=d["billed_energy_wh"],
        timer=(d["timer"][0], datetime.fromisoformat(d["timer"][1])) if d["timer"] else None,
        attempts=d["attempts"],
        topup_refused=d["topup_refused"],
        topup_minor=d["topup_minor"],
        stop_reason=d["stop_reason"],
        notes=tuple(d["notes"]),
        fiscal=tuple(d["fiscal"]),
        tariff_id=d.get("tariff_id"),
        invoicer=d.get("invoicer"),
        invoice_reference=d.get("invoice_reference"),
    )
