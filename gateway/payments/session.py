"""The charging-session payment state machine: ``transition(session, event, now, policy)``
gives the new session and the commands to run. Pure: no I/O, no clock, no randomness.

Which state may follow which is the table in ``states.py``; the handlers here decide the
*trigger* and the commands, ``_go`` follows the table. After every transition the money
ledger and the liveness rule are checked (``violations``), so a test that drives the engine
checks them too:

- per hold: captured + released <= held, and a settled hold says how (captured, released,
  lapsed, unconfirmed); the session's held = captured + released + open;
- an amount is captured only on positive evidence: the terminal's approval of *our* capture,
  or its repeat of the last result (ZVT 06 20) showing it. A hold that vanished from the
  terminal's open list without that evidence is *unconfirmed*, never "probably captured";
- a final session has nothing open unless it says why: it owes money (``owed_minor``: priced
  but not captured) or a hold lapsed/stays unconfirmed;
- an open session always has a next action and a deadline (its timer), and a session that
  holds money always knows the receipt numbers to settle it with.

Which energy is billed (the documented rule when sources disagree): the meter's stop reading,
else the last trusted (signed) meter value, else the charger's own session total, else the
last unsigned value; a difference above the tolerance between the billed value and the
charger's total is recorded in ``notes`` for reconciliation. Zero energy bills nothing unless
the site's policy says otherwise (``bill_without_energy``): the whole hold is released.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import Outcome
from gateway.errors import InvariantViolated
from gateway.fiscal.meter import SignedMeter
from gateway.fiscal.profiles import PROFILES, Profile
from gateway.fiscal.receipt import (
    FiscalData,
    Receipt,
    ReceiptFacts,
    ReceiptState,
    VatLine,
    vat_breakdown,
)
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.events import Operation, TimerKind
from gateway.payments.plausibility import KEPT, screen
from gateway.payments.preauth import HoldPolicy, initial_hold, topup
from gateway.payments.refunds import Refund, RefundMethod, RefundStatus
from gateway.payments.schemes import Validity
from gateway.payments.states import FINAL, HOLDING, State, Trigger, next_state
from gateway.payments.tariff import Pricer, Sample, Tariff, describe

__all__ = [
    "FINAL",
    "Hold",
    "HoldStatus",
    "Policy",
    "Reading",
    "Session",
    "State",
    "Transition",
    "transition",
]


@dataclass(frozen=True, slots=True)
class Policy:
    hold: HoldPolicy
    tariffs: dict[str, Tariff]  # by EVSE id; "*" is the site default
    tz: ZoneInfo
    catalog: dict[str, Tariff] = field(default_factory=dict)  # every tariff ever in force, by id
    start_timeout: timedelta = timedelta(minutes=3)
    stop_timeout: timedelta = timedelta(seconds=60)
    answer_timeout: timedelta = timedelta(
        minutes=6
    )  # ZVT T4 (3 min) with room for intermediate statuses
    resolve_auth_within: timedelta = timedelta(hours=1)  # a lost pre-auth is asked about this long
    validity: Validity = field(default_factory=Validity)
    stop_before_expiry: timedelta = timedelta(hours=24)
    give_up_before_expiry: timedelta = timedelta(hours=1)
    retry_initial: timedelta = timedelta(seconds=30)
    retry_max: timedelta = timedelta(minutes=30)
    safety_margin_minor: int = 50
    min_partial_minor: int = 500
    energy_tolerance_wh: int = 10
    bill_without_energy: bool = False  # zero trusted energy: release the whole hold
    topup_terminals: frozenset[str] = frozenset()  # terminals that can add a hold to a card session
    fiscal: Profile = field(default_factory=lambda: PROFILES["none"])  # the site's receipt profile
    fiscal_wait: timedelta = timedelta(
        seconds=20
    )  # how long a receipt waits for the CPO's signature
    e_receipt_url: str | None = None  # where the complete receipt will be, "{reference}" filled in
    display_only: frozenset[str] = (
        frozenset()
    )  # terminals without a printer: the receipt is displayed
    route_holds: dict[str, HoldPolicy] = field(
        default_factory=dict
    )  # a route's (acquirer profile's) hold policy
    route_tariffs: dict[str, Tariff] = field(default_factory=dict)  # a route's own tariff
    pricer: Pricer = field(
        default_factory=Pricer, compare=False, repr=False
    )  # price, incrementally
    rated_power_w: dict[str, int] = field(default_factory=dict)  # by EVSE (plausibility.py)

    def tariff(self, evse: str) -> Tariff | None:
        return self.tariffs.get(evse) or self.tariffs.get("*")

    def hold_of(self, route: str | None) -> HoldPolicy:
        """The hold policy of a route (its acquirer profile), else the site's."""
        return (self.route_holds.get(route) if route else None) or self.hold

    def pinned(self, session: Session) -> Tariff | None:
        """The tariff a session started with (a tariff change mid-session never reprices it)."""
        if session.tariff_id is not None:
            found = self.catalog.get(session.tariff_id) or next(
                (t for t in self.route_tariffs.values() if t.id == session.tariff_id), None
            )
            if found is not None:
                return found
            current = self.tariff(session.evse)
            if current is not None and current.id == session.tariff_id:
                return current
        return self.tariff(session.evse)


class HoldStatus(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"  # booked (the rest of it released) on positive evidence
    RELEASED = "released"
    LAPSED = "lapsed"  # not settled before its validity ended: the issuer lets it go
    UNCONFIRMED = "unconfirmed"  # gone from the terminal, no evidence of our capture


@dataclass(frozen=True, slots=True)
class Hold:
    """One pre-authorisation at the terminal (a session has one, plus one per top-up)."""

    receipt_no: int
    amount_minor: int
    trace_no: int | None = None
    target_minor: int | None = None  # what to capture from it, decided at the stop
    captured_minor: int = 0
    released_minor: int = 0
    status: HoldStatus = HoldStatus.OPEN
    booking_receipt: int | None = None  # the terminal's receipt for the capture or release
    capture_sent_at: datetime | None = None  # when the last capture command for it left
    # A top-up of this hold was lost, or was still out when the charge stopped: the terminal may
    # hold more than ``amount_minor``, so it is captured by booking the amount (ZVT 06 24), never
    # by releasing a difference (06 23).
    uncertain: bool = False

    @property
    def open_minor(self) -> int:
        return self.amount_minor - self.captured_minor - self.released_minor


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
    hold_minor: int = 0  # the hold asked for
    holds: tuple[Hold, ...] = ()
    price_minor: int = 0
    price_excl: str = "0"  # the price before taxes (Decimal text), for the upstream tax split
    owed_minor: int = 0  # priced but not captured with evidence: a debt for reconciliation
    shortfall_minor: int = 0  # price above what was held (part of owed)
    unpaid_energy_wh: int = 0  # energy reported for a session that never billed it
    unpaid_minor: int = 0  # its price (part of owed)
    reference: str | None = None  # OCPI authorization_reference, set at approval
    card: dict[str, str] = field(default_factory=dict)
    scheme: str | None = None
    expires_at: datetime | None = None
    meter_start_wh: int | None = None
    readings: tuple[Reading, ...] = ()
    billed_energy_wh: int = 0
    reported_energy_wh: int | None = (
        None  # the charger's own total for the session, for reconciliation
    )
    timer: tuple[TimerKind, datetime] | None = None
    attempts: int = 0
    lost_results: int = (
        0  # terminal operations whose outcome we never saw (their trace may be the terminal's last)
    )
    held_result: e.LastResult | None = (
        None  # the in-flight command's result, stored before it was acknowledged
    )
    topup_refused: bool = False
    topup_minor: int = 0
    stop_reason: str | None = None
    notes: tuple[str, ...] = ()
    discrepancies: tuple[str, ...] = ()  # what the terminal said that does not fit what was asked
    fiscal: tuple[str, ...] = ()  # the CPO's free receipt lines
    fiscal_fields: tuple[
        tuple[str, str], ...
    ] = ()  # the CPO's fiscal signature fields (zki, jir, …)
    tariff_id: str | None = None  # pinned when the session starts
    route: str | None = (
        None  # the route (acquirer profile) that took it: its hold policy tops it up
    )
    invoicer: str | None = None  # "cpo" / "ptp" from the CDR (OCPI flow); None: the local flow
    invoice_reference: str | None = None
    invoice_url: str | None = None
    vat: tuple[VatLine, ...] = ()  # the price's VAT breakdown per rate, adding up to price_minor
    receipt: ReceiptState = ReceiptState.NONE
    receipt_lines: tuple[str, ...] = ()  # what was sent to the terminal, as sent
    receipt_missing: tuple[str, ...] = ()  # required fields the receipt lacked
    receipt_upstream: tuple[
        str, ...
    ] = ()  # its invoice and fiscal lines for the CPO (FAC eft_data)
    captured_at: datetime | None = None
    meter_records: tuple[
        SignedMeter, ...
    ] = ()  # the meter's signed records (OCMF), one per payload hash
    refunds: tuple[
        Refund, ...
    ] = ()  # money given back after the capture (gateway/payments/refunds.py)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def authorized_minor(self) -> int:
        return sum(h.amount_minor for h in self.holds)

    @property
    def captured_minor(self) -> int:
        return sum(h.captured_minor for h in self.holds)

    @property
    def released_minor(self) -> int:
        return sum(h.released_minor for h in self.holds)

    @property
    def open_minor(self) -> int:
        return sum(h.open_minor for h in self.holds)

    @property
    def receipt_no(self) -> int | None:
        return self.holds[0].receipt_no if self.holds else None

    @property
    def refunded_minor(self) -> int:
        return sum(r.amount_minor for r in self.refunds if r.status is RefundStatus.DONE)

    @property
    def refundable_minor(self) -> int:
        """What may still be given back: captured, less refunds done and refunds under way."""
        return (
            self.captured_minor
            - self.refunded_minor
            - sum(r.amount_minor for r in self.refunds if r.pending)
        )

    @property
    def current(self) -> Hold | None:
        """The hold being settled (the first one still open)."""
        return next((h for h in self.holds if h.status is HoldStatus.OPEN), None)

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


_UNKNOWN_STATES = (State.AUTH_UNKNOWN, State.CAPTURE_UNKNOWN, State.RELEASE_UNKNOWN)
_CHARGING_STATES = (State.CHARGING, State.TOPPING_UP, State.STOPPING)


def transition(
    session: Session | None, event: e.Event, now: datetime, policy: Policy
) -> Transition:
    result = _dispatch(session, event, now, policy)
    if result.session is not None and result.session != session:
        problems = violations(result.session)
        if problems:
            raise InvariantViolated(
                f"session {result.session.id} after {type(event).__name__}: {'; '.join(problems)}"
            )
    return result


def _dispatch(session: Session | None, event: e.Event, now: datetime, policy: Policy) -> Transition:
    if session is None:
        if isinstance(event, e.CardPresented):
            return _start(event, now, policy)
        if isinstance(event, e.OrphanFound):
            return _orphan(event, now, policy)
        return Transition(None, note="no such session")
    if isinstance(event, e.RefundRequested):
        return _refund_requested(session, event, now)
    if isinstance(event, e.PriceCorrected):
        return _price_corrected(session, event, now)
    if isinstance(event, e.TerminalResultArrived) and event.operation in (
        Operation.REFUND,
        Operation.REVERSAL,
    ):
        return _refund_result(session, event)
    if session.final:
        if isinstance(event, e.FiscalDataArrived):
            return _fiscal(session, event, now, policy)
        if isinstance(event, e.ChargerStopped):
            return _unpaid_energy(session, event, now, policy)
        return Transition(session, note="final: ignored")
    charging = session.state in _CHARGING_STATES
    if why := screen(session, event, now, policy.rated_power_w.get(session.evse), charging):
        more = (why,) if len(session.discrepancies) < KEPT else ()
        return Transition(replace(session, discrepancies=(*session.discrepancies, *more)), note=why)
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
            return _charger_faulted(session, event, now, policy)
        case e.TimerFired():
            return _timer(session, event, now, policy)
        case e.Resumed():
            return _resumed(session, now, policy)
        case e.FiscalDataArrived():
            return _fiscal(session, event, now, policy)
    return Transition(session, note="ignored")


def violations(s: Session) -> list[str]:
    """What is wrong with a session's money or liveness; empty when all is well."""
    out = []
    for h in s.holds:
        if h.captured_minor < 0 or h.released_minor < 0 or h.open_minor < 0:
            out.append(
                f"hold {h.receipt_no}: captured {h.captured_minor} + released {h.released_minor} "
                f"> held"
            )
        settled = h.status in (HoldStatus.CAPTURED, HoldStatus.RELEASED)
        if settled != (h.open_minor == 0) and h.amount_minor:
            out.append(f"hold {h.receipt_no} is {h.status} with {h.open_minor} open")
    if s.captured_minor > s.authorized_minor:
        out.append(f"captured {s.captured_minor} > held {s.authorized_minor}")
    if s.refundable_minor < 0:
        out.append(f"refunds {s.captured_minor - s.refundable_minor} > captured {s.captured_minor}")
    if s.final:
        explained = s.owed_minor > 0 or any(
            h.status in (HoldStatus.LAPSED, HoldStatus.UNCONFIRMED) for h in s.holds
        )
        if s.open_minor and not explained:
            out.append(f"final with {s.open_minor} open and nothing owed or lapsed")
        if s.state in (State.CAPTURE_FAILED, State.CAPTURE_UNCONFIRMED) and s.owed_minor <= 0:
            out.append(f"{s.state} without an amount owed")
    else:
        if s.timer is None:
            out.append(f"open in {s.state} without a next action and deadline")
        if s.state in HOLDING and not s.holds:
            out.append(f"{s.state} without a hold to settle")
    return out


# ---- handlers ------------------------------------------------------------------------------


def _go(s: Session, trigger: Trigger, **changes: Any) -> Session:
    if trigger is Trigger.LOST:  # a terminal operation whose outcome we did not see
        changes.setdefault("lost_results", s.lost_results + 1)
    return replace(s, state=next_state(s.state, trigger), **changes)


def _note(s: Session, text: str) -> tuple[str, ...]:
    return (*s.notes, text)


def _start(ev: e.CardPresented, now: datetime, policy: Policy) -> Transition:
    routed = ev.route is not None
    tariff = (policy.route_tariffs.get(ev.route) if ev.route else None) or policy.tariff(ev.evse)
    hold_policy = policy.hold_of(ev.route)
    hold = initial_hold(hold_policy, ev.currency, tariff, ev.target, now, policy.tz)
    notes: tuple[str, ...] = (
        (f"route {ev.route}: terminal {ev.terminal}, {ev.currency}",) if routed else ()
    )
    if hold_policy.strategy == "incremental" and ev.terminal not in policy.topup_terminals:
        notes = (
            *notes,
            f"terminal {ev.terminal} cannot add to a hold: the charge stops at the cap",
        )
    s = Session(
        ev.session_id,
        ev.evse,
        ev.terminal,
        ev.currency,
        next_state(None, Trigger.CARD),
        now,
        hold_minor=hold,
        tariff_id=tariff.id if tariff else None,
        route=ev.route,
        notes=notes,
        timer=(TimerKind.ANSWER, now + policy.answer_timeout),
    )
    ref = s.id[:16]  # the terminal's BMP60 reference: short, tied to the session
    return Transition(
        s, (c.Preauthorize(f"{s.id}:preauth", s.id, s.terminal, hold, s.currency, ref),)
    )


def _orphan(ev: e.OrphanFound, now: datetime, policy: Policy) -> Transition:
    """A hold open at the terminal that no session owns (its result was lost and no session
    could attribute it by its data): release it. Its amount is unknown here, so it is booked 0."""
    s = Session(
        ev.session_id,
        "-",
        ev.terminal,
        ev.currency,
        next_state(None, Trigger.ORPHAN),
        now,
        holds=(Hold(ev.receipt_no, 0, target_minor=0),),
        expires_at=now + policy.validity.default,
        notes=("orphan hold found by the terminal sweep",),
    )
    return _settle_command(s, now, policy)


# The operation whose approval, stored before it is acknowledged, waits in ``held_result``.
_PROVISIONAL_IN = {
    Operation.PREAUTHORIZE: State.AUTHORIZING,
    Operation.TOPUP: State.TOPPING_UP,
    Operation.CAPTURE: State.CAPTURING,
    Operation.RELEASE: State.RELEASING,
}


def _terminal_result(
    s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy
) -> Transition:
    if ev.provisional and ev.outcome is Outcome.APPROVED and ev.operation in _PROVISIONAL_IN:
        # Approved but not yet acknowledged: the terminal reverses it if our 80 00 never
        # arrives (ZVT 2.2.8), so it is evidence for the enquiry after a crash, not the outcome
        # (and a top-up does not raise the cap until it stands). A refusal moves no money.
        if s.state is _PROVISIONAL_IN[ev.operation]:
            return Transition(
                replace(s, held_result=e.LastResult(True, ev.receipt_no, ev.amount_minor))
            )
        return Transition(s, note="provisional result: not awaited")
    if s.held_result is not None:
        s = replace(s, held_result=None)
    if ev.operation == Operation.PREAUTHORIZE:
        if s.state is State.AUTHORIZING:
            return _preauth_result(s, ev, now, policy)
        if (
            s.state is State.AUTH_UNKNOWN
            and ev.outcome is Outcome.APPROVED
            and ev.receipt_no is not None
        ):
            # Our hold exists after all, but the charger was never authorised: give it back.
            s = _go(
                s,
                Trigger.LATE_APPROVAL,
                holds=(
                    Hold(
                        ev.receipt_no, ev.amount_minor or s.hold_minor, ev.trace_no, target_minor=0
                    ),
                ),
                card=dict(ev.card),
                notes=_note(s, "late approval released"),
            )
            return _settle_command(s, now, policy)
        return Transition(s, note=f"pre-auth result in {s.state}: ignored")
    if ev.operation == Operation.TOPUP:
        return _topup_result(s, ev, now, policy)
    hold = _hold(s, ev.for_receipt)
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
    if (
        ev.outcome is Outcome.APPROVED and s.state is not settling[2]
    ):  # a late approval is evidence too
        return _settled(s, ev, hold, now, policy)
    if s.state is not settling[0]:
        return Transition(s, note=f"{ev.operation} {ev.outcome} in {s.state}: the enquiry decides")
    # Declined, refused or lost: nothing is assumed. Ask the terminal what it holds and did.
    # A busy terminal answered, though: the silence the backoff grows on is over, so the next
    # try comes after the first interval, not 30 minutes on after a few busy answers.
    attempts = 0 if ev.outcome is Outcome.BUSY else s.attempts
    s = _go(
        s,
        Trigger.LOST,
        attempts=attempts,
        notes=_note(s, f"{ev.operation} {ev.outcome}: {ev.message}"),
    )
    return _query(s, now, policy)


def _preauth_result(
    s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy
) -> Transition:
    if ev.outcome is Outcome.APPROVED and ev.receipt_no is None:
        # Without the receipt number the hold could never be captured or released: not an approval.
        s = _go(
            s,
            Trigger.LOST,
            notes=_note(s, "approval without a receipt number: asking the terminal"),
        )
        return _query(s, now, policy)
    if ev.outcome is Outcome.APPROVED:
        assert ev.receipt_no is not None  # noqa: S101 - narrowed above
        approved = ev.amount_minor if ev.amount_minor is not None else s.hold_minor
        scheme, validity = policy.validity.for_card(s.terminal, ev.card)
        s = replace(
            s,
            holds=(Hold(ev.receipt_no, approved, ev.trace_no),),
            card=dict(ev.card),
            scheme=scheme,
            reference=authorization_reference(s.id),
            expires_at=now + validity,
        )
        if approved < min(policy.min_partial_minor, s.hold_minor):
            s = _go(
                s,
                Trigger.APPROVED_LOW,
                notes=_note(s, f"partial approval {approved} below minimum"),
            )
            return _settle_command(_targets(s, 0), now, policy)
        s = _go(s, Trigger.APPROVED, timer=(TimerKind.START, now + policy.start_timeout))
        return Transition(s, (_authorize(s, policy),))
    if ev.outcome is Outcome.UNKNOWN:
        return _query(_go(s, Trigger.LOST), now, policy)
    trigger = (
        Trigger.DECLINED if ev.outcome in (Outcome.DECLINED, Outcome.ABORTED) else Trigger.REFUSED
    )
    return _finish(_go(s, trigger, notes=_note(s, f"{ev.outcome}: {ev.message}")))


def _topup_result(
    s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy
) -> Transition:
    if not s.topup_minor:
        return Transition(s, note="top-up result not awaited: ignored")
    if s.held_result is not None:
        # Approved, stored, and then the answer was lost (a restart, a timeout): whether our
        # acknowledgement reached the terminal is unknown, so the cap stays where it was. A
        # bigger first hold is closed by its capture or release; a second one no session owns
        # is released by the terminal sweep.
        ev = replace(
            ev, message=f"approved as receipt {s.held_result.receipt_no} but never acknowledged"
        )
        s = replace(s, held_result=None)
    if ev.outcome is Outcome.APPROVED and ev.receipt_no is not None:
        added = ev.amount_minor if ev.amount_minor is not None else s.topup_minor
        known = _hold(s, ev.receipt_no)
        if known is not None:  # the terminal increased the same reservation
            holds = tuple(
                replace(h, amount_minor=h.amount_minor + added) if h is known else h
                for h in s.holds
            )
        else:  # a new reservation with its own receipt, settled on its own
            target = 0 if s.state not in _CHARGING_STATES else None
            holds = (*s.holds, Hold(ev.receipt_no, added, ev.trace_no, target_minor=target))
        s = replace(s, holds=holds, topup_minor=0)
    else:
        lost = "top-up result lost" + (f" ({ev.message})" if ev.message else "")
        why = lost if ev.outcome is Outcome.UNKNOWN else f"top-up refused: {ev.message}"
        s = replace(
            s,
            topup_refused=True,
            topup_minor=0,
            notes=_note(s, f"{why}; the charge stops at the cap"),
            lost_results=s.lost_results + (ev.outcome is Outcome.UNKNOWN),
        )
        if ev.outcome is Outcome.UNKNOWN:  # it may have raised the first hold after all
            s = _first_hold_uncertain(s)
    if s.state is State.TOPPING_UP:
        return Transition(_go(s, Trigger.TOPPED_UP, timer=_expiry_timer(s, now, policy)))
    return Transition(s)


def _open_preauths(
    s: Session, ev: e.OpenPreauthsReported, now: datetime, policy: Policy
) -> Transition:
    if s.state not in _UNKNOWN_STATES:
        return Transition(s, note="open pre-auths: not waiting for them")
    if ev.failed:
        return _enquiry_failed(s, now, policy, busy=ev.busy)
    held = s.held_result  # used up by this answer, whatever it says
    if held is not None:
        s = replace(s, held_result=None)
    if s.state is State.AUTH_UNKNOWN:
        return _adopt(s, ev, now, policy, held)
    hold = s.current
    assert hold is not None  # noqa: S101 - an unknown settlement always has an open hold
    capture = s.state is State.CAPTURE_UNKNOWN
    if hold.receipt_no in ev.receipts:  # the terminal still holds it: our command did not happen
        at = _next_try(s, now, policy)
        if at is None:
            return _give_up(
                s, hold, now, policy, "still open as the hold is about to lapse", fate_known=True
            )
        kind = "capture" if capture else "release"
        return Transition(
            _go(
                s,
                Trigger.STILL_OPEN,
                timer=(TimerKind.RETRY, at),
                attempts=s.attempts + 1,
                notes=_note(s, f"hold {hold.receipt_no} still open: {kind} again later"),
            )
        )
    if not capture:  # no longer held: released (or lapsed) — either way nothing is taken
        done = replace(hold, released_minor=hold.amount_minor, status=HoldStatus.RELEASED)
        s = replace(
            s, notes=_note(s, f"hold {hold.receipt_no} no longer open at the terminal: released")
        )
        return _next(_replace_hold(s, hold, done), now, policy)
    target = hold.target_minor or 0
    last = ev.last
    if (
        held is not None
        and held.receipt_no is not None
        and held.amount_minor in (target, hold.amount_minor - target)
    ):
        last = (
            held  # its own result, stored before the crash: the hold is gone, so the capture stood
        )
    if (
        last is not None
        and last.approved
        and last.receipt_no is not None
        and last.receipt_no != hold.receipt_no
        and last.receipt_no not in ev.receipts
        and last.amount_minor in (target, hold.amount_minor - target)
    ):
        done = replace(
            hold,
            captured_minor=target,
            released_minor=hold.amount_minor - target,
            status=HoldStatus.CAPTURED,
            booking_receipt=last.receipt_no,
        )
        s = replace(
            s,
            notes=_note(
                s, f"capture of hold {hold.receipt_no} confirmed by the terminal's last result"
            ),
        )
        return _next(_replace_hold(s, hold, done), now, policy)
    done = replace(hold, status=HoldStatus.UNCONFIRMED)
    s = replace(
        s,
        notes=_note(
            s, f"hold {hold.receipt_no} gone from the terminal without evidence of the capture"
        ),
    )
    return _next(_replace_hold(s, hold, done), now, policy)


def _adopt(
    s: Session, ev: e.OpenPreauthsReported, now: datetime, policy: Policy, held: e.LastResult | None
) -> Transition:
    """A pre-auth whose result was lost: adopt an open hold only when the terminal's result shows
    it and its amount fits ours — never by order of arrival; then give it back. Our own result,
    stored before the crash (``held``), is the better evidence: its hold is ours if it is still
    open, and gone if the terminal reversed it for want of our acknowledgement."""
    last = held or ev.last
    if held is not None and held.receipt_no not in ev.receipts:
        why = (
            f"our pre-auth {held.receipt_no} was reversed by the terminal (our acknowledgement "
            f"never reached it)"
        )
        return _finish(_go(s, Trigger.NO_HOLD, notes=_note(s, why)))
    if (
        last is not None
        and last.approved
        and last.receipt_no in ev.orphans
        and last.amount_minor is not None
        and 0 < last.amount_minor <= s.hold_minor
    ):
        assert last.receipt_no is not None  # noqa: S101 - it is in the orphans
        s = _go(
            s,
            Trigger.ADOPTED,
            holds=(Hold(last.receipt_no, last.amount_minor, target_minor=0),),
            expires_at=now + policy.validity.default,
            notes=_note(s, "our lost pre-auth found open: released"),
        )
        return _settle_command(s, now, policy)
    why = "no pre-authorisation was made"
    if ev.orphans:
        why = f"open holds {list(ev.orphans)} not attributable to this session: released as orphans"
    return _finish(_go(s, Trigger.NO_HOLD, notes=_note(s, why)))


def _enquiry_failed(s: Session, now: datetime, policy: Policy, *, busy: bool = False) -> Transition:
    """The backoff grows on silence only: a terminal that answered busy is there, and the next
    enquiry comes after the first interval (the deadline still bounds how long we keep asking)."""
    if busy:
        s = replace(s, attempts=0)
    at = _next_try(s, now, policy)
    if at is not None:
        return Transition(replace(s, attempts=s.attempts + 1, timer=(TimerKind.QUERY, at)))
    if s.state is State.AUTH_UNKNOWN:
        note = "terminal unreachable: any hold it made is left to the terminal sweep"
        return _finish(_go(s, Trigger.UNREACHABLE, notes=_note(s, note)))
    hold = s.current
    assert hold is not None  # noqa: S101 - an unknown settlement always has an open hold
    return _give_up(
        s, hold, now, policy, "terminal unreachable until the hold lapsed", fate_known=False
    )


def _give_up(
    s: Session, hold: Hold, now: datetime, policy: Policy, why: str, *, fate_known: bool
) -> Transition:
    """The hold cannot be settled before it lapses: say so on the hold (never as if done). A
    capture whose fate the terminal could not tell us is unconfirmed, not lapsed."""
    capture = s.state is State.CAPTURE_UNKNOWN and bool(hold.target_minor)
    status = HoldStatus.UNCONFIRMED if capture and not fate_known else HoldStatus.LAPSED
    s = replace(s, notes=_note(s, f"hold {hold.receipt_no}: {why}"))
    return _next(_replace_hold(s, hold, replace(hold, status=status)), now, policy)


def _charger_started(s: Session, ev: e.ChargerStarted, now: datetime, policy: Policy) -> Transition:
    if s.state is not State.AUTHORIZED:
        return Transition(s, note="charger started: not expected")
    s = replace(s, meter_start_wh=ev.meter_wh, readings=(Reading(now, 0, True),))
    return Transition(_go(s, Trigger.STARTED, timer=_expiry_timer(s, now, policy)))


def _meter_value(s: Session, ev: e.MeterValue, now: datetime, policy: Policy) -> Transition:
    if ev.signed is not None:
        s = _record_meter(s, ev.signed)
    if s.state not in _CHARGING_STATES or s.meter_start_wh is None:
        return Transition(s, note="meter value: not charging")
    energy = ev.meter_wh - s.meter_start_wh
    if s.readings and (now < s.readings[-1].at or energy < s.readings[-1].energy_wh):
        return Transition(s, note="meter value out of order: ignored")
    readings = (*s.readings, Reading(now, energy, ev.trusted))
    s = _price(s, readings, policy, readings=readings)
    if s.state is State.STOPPING:
        return Transition(s)
    can_topup = (
        s.state is State.CHARGING and not s.topup_refused and s.terminal in policy.topup_terminals
    )
    extra = topup(policy.hold_of(s.route), s.authorized_minor, s.price_minor) if can_topup else None
    if extra:
        return _topup(s, extra, now, policy)
    if s.price_minor >= s.authorized_minor - policy.safety_margin_minor:
        return _stop(s, now, policy, "cost cap reached")
    return Transition(s)


def _charger_stopped(s: Session, ev: e.ChargerStopped, now: datetime, policy: Policy) -> Transition:
    if ev.signed is not None:
        s = _record_meter(s, ev.signed)
    if s.meter_start_wh is None and _reported_energy(s, ev) > 0:  # it charged without our knowing
        s = _unpaid_energy(s, ev, now, policy).session or s
    if s.state is State.AUTHORIZED:
        s = _go(
            s, Trigger.NOT_STARTED, stop_reason=ev.reason, notes=_note(s, "charging never started")
        )
        return _settle_command(_targets(s, 0), now, policy)
    if s.state not in _CHARGING_STATES or s.meter_start_wh is None:
        return Transition(s, note="charger stopped: not charging")
    energy, notes = _billed_energy(s, ev, policy)
    readings = (*s.readings, Reading(max(now, s.readings[-1].at), energy, True))
    s = replace(
        s,
        stop_reason=s.stop_reason or ev.reason,
        notes=(*s.notes, *notes),
        invoicer=ev.invoicer,
        invoice_reference=ev.invoice_reference,
        reported_energy_wh=ev.session_energy_wh,
    )
    return _finalize(s, readings, now, policy)


def _charger_faulted(s: Session, ev: e.ChargerFaulted, now: datetime, policy: Policy) -> Transition:
    if s.state is State.AUTHORIZED:
        s = _go(
            s,
            Trigger.NOT_STARTED,
            stop_reason=ev.reason,
            notes=_note(s, f"charger fault: {ev.reason}"),
        )
        return _settle_command(_targets(s, 0), now, policy)
    if s.state not in _CHARGING_STATES:
        return Transition(s, note="fault: not charging")
    trusted = tuple(r for r in s.readings if r.trusted) or s.readings[:1]
    stop = c.StopCharger(f"{s.id}:stop:fault", s.id, s.evse, ev.reason)
    s = replace(
        s, stop_reason=ev.reason, notes=_note(s, f"billed to last trusted reading: {ev.reason}")
    )
    done = _finalize(s, trusted, now, policy)
    return Transition(done.session, (stop, *done.commands))


def _record_meter(s: Session, m: SignedMeter) -> Session:
    """Keep a signed meter record once (by payload hash), with what is wrong with it noted."""
    if any(r.payload_sha256 == m.payload_sha256 for r in s.meter_records):
        return s
    s = replace(s, meter_records=(*s.meter_records, m))
    if not _bound(s, m):
        return replace(
            s,
            discrepancies=(
                *s.discrepancies,
                f"signed meter record {m.payload_sha256[:16]} is for "
                f"transaction {m.identification!r}, not {s.reference!r}: not used",
            ),
        )
    if not m.verified:
        return replace(
            s,
            notes=_note(s, f"signed meter record {m.payload_sha256[:16]} not verified: {m.reason}"),
        )
    return s


def _bound(s: Session, m: SignedMeter) -> bool:
    """A record is this session's if the charger sent it for the session and, where the meter wrote
    an identification, it is the session's authorization reference (the card transaction's)."""
    return not m.identification or m.identification == s.reference


def _signed_energy(s: Session) -> int | None:
    """Energy between the verified begin and end readings of one meter, bound to the session."""
    usable = [m for m in s.meter_records if m.verified and _bound(s, m)]
    begins = [(m.meter, m.begin_wh) for m in usable if m.begin_wh is not None]
    ends = [(m.meter, m.end_wh) for m in usable if m.end_wh is not None]
    if not begins or not ends or begins[0][0] != ends[-1][0]:
        return None
    begin, end = begins[0][1], ends[-1][1]
    return end - begin if end >= begin else None


def _meter_proof(s: Session) -> SignedMeter | None:
    """The record the receipt shows: the verified one with the end reading, else the newest."""
    bound = [m for m in s.meter_records if _bound(s, m)]
    return next((m for m in reversed(bound) if m.verified and m.end_wh is not None), None) or (
        bound[-1] if bound else None
    )


def _reported_energy(s: Session, ev: e.ChargerStopped) -> int:
    if ev.session_energy_wh is not None:
        return ev.session_energy_wh
    return (ev.meter_wh or 0) - (s.meter_start_wh or 0)


def _unpaid_energy(s: Session, ev: e.ChargerStopped, now: datetime, policy: Policy) -> Transition:
    """Energy reported for a session that never billed it (an ambiguous start whose hold is
    being or was released, a CDR after the release): a debt, never dropped. A final session
    sends it upstream on its own; an open one carries it in its outcome."""
    delivered = _reported_energy(s, ev)
    if delivered <= 0 or s.billed_energy_wh > 0 or s.unpaid_energy_wh:
        return Transition(s, note="stopped: nothing unbilled")
    start = s.readings[0].at if s.readings else s.created_at
    priced = _price(s, (Reading(start, 0, True), Reading(max(now, start), delivered, True)), policy)
    if not s.final:
        return Transition(
            replace(
                s,
                unpaid_energy_wh=delivered,
                unpaid_minor=priced.price_minor,
                notes=_note(
                    s, f"{delivered} Wh delivered without a start: {priced.price_minor} owed"
                ),
            )
        )
    s = replace(
        s,
        unpaid_energy_wh=delivered,
        unpaid_minor=priced.price_minor,
        owed_minor=s.owed_minor + priced.price_minor,
        notes=_note(
            s, f"{delivered} Wh delivered after the session ended unpaid: {priced.price_minor} owed"
        ),
    )
    return Transition(
        s, (c.Enqueue(f"{s.id}:unpaid", f"session:{s.id}", "session.outcome", outcome_payload(s)),)
    )


def _timer(s: Session, ev: e.TimerFired, now: datetime, policy: Policy) -> Transition:
    if s.timer is None or s.timer[0] != ev.kind or now < s.timer[1]:
        return Transition(s, note="stale timer")
    kind = TimerKind(ev.kind)
    if kind == TimerKind.START and s.state is State.AUTHORIZED:
        stop = c.StopCharger(
            f"{s.id}:stop:start-timeout", s.id, s.evse, "charging did not start in time"
        )
        s = _go(s, Trigger.NOT_STARTED, notes=_note(s, "charging did not start in time"))
        done = _settle_command(_targets(s, 0), now, policy)
        return Transition(done.session, (stop, *done.commands))
    if kind == TimerKind.EXPIRY and s.state is State.CHARGING:
        return _stop(s, now, policy, "hold validity ends soon")
    if kind == TimerKind.STOP and s.state is State.STOPPING:
        s = replace(s, notes=_note(s, "no stop confirmation: billed to last reading"))
        return _finalize(
            s, tuple(r for r in s.readings if r.trusted) or s.readings[:1], now, policy
        )
    if kind == TimerKind.RETRY and s.state in (State.CAPTURE_RETRY, State.RELEASE_RETRY):
        return _settle_command(_go(s, Trigger.RETRY), now, policy)
    if kind == TimerKind.QUERY and s.state in _UNKNOWN_STATES:
        return _query(s, now, policy)
    if kind == TimerKind.FISCAL and s.state is State.RECEIPTING:
        s, printed = _receipt(_go(s, Trigger.FISCAL_TIMEOUT, timer=None), now, policy)
        return Transition(s, printed)
    if kind == TimerKind.ANSWER:
        if s.state in (State.AUTHORIZING, State.CAPTURING, State.RELEASING):
            return _query(
                _go(s, Trigger.LOST, notes=_note(s, f"no answer from the terminal in {s.state}")),
                now,
                policy,
            )
        if s.state is State.TOPPING_UP:
            lost = e.TerminalResultArrived(s.id, ev.event_id, Operation.TOPUP, Outcome.UNKNOWN)
            return _topup_result(s, lost, now, policy)
        if s.state in _UNKNOWN_STATES:
            return _enquiry_failed(s, now, policy)
    raise InvariantViolated(f"session {s.id}: timer {kind} armed in {s.state}")


def _resumed(s: Session, now: datetime, policy: Policy) -> Transition:
    """After a restart: ask the terminal about anything that was in flight, never repeat a
    terminal command. The charger is told again what it may not have heard (authorize, stop):
    the same message, which it takes once."""
    if s.state in (State.AUTHORIZING, State.CAPTURING, State.RELEASING):
        return _query(_go(s, Trigger.LOST), now, policy)
    if s.state in _UNKNOWN_STATES:
        return _query(s, now, policy)
    if s.state is State.TOPPING_UP:  # its fate is unknown: keep the old holds as the cap
        lost = e.TerminalResultArrived(s.id, "resume", Operation.TOPUP, Outcome.UNKNOWN)
        return _topup_result(s, lost, now, policy)
    if s.state is State.STOPPING:
        return Transition(
            s, (c.StopCharger(f"{s.id}:stop:resume", s.id, s.evse, s.stop_reason or "resume"),)
        )
    if (
        s.state is State.AUTHORIZED
    ):  # the authorisation may have died with the process: say it again
        return Transition(s, (_authorize(s, policy, repeat=True),))
    return Transition(s)


# ---- refunds (a record on a completed session: gateway/payments/refunds.py) --------------


def _refund_requested(s: Session, ev: e.RefundRequested, now: datetime) -> Transition:
    available = s.refundable_minor
    why = ""
    if s.state is not State.COMPLETED:
        why = f"only a completed session's capture can be refunded (this one is {s.state.value})"
    elif any(r.pending for r in s.refunds):
        why = "another refund of this session is not settled yet"
    elif ev.amount_minor <= 0:
        why = "a refund must be above zero"
    elif ev.amount_minor > available:
        why = f"a refund of {ev.amount_minor} exceeds the {available} captured and not yet refunded"
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
    receipt = booking[0] if method is RefundMethod.REVERSAL else None
    cmd = c.RefundPayment(
        f"{s.id}:refund:{ev.event_id}",
        s.id,
        s.terminal,
        method.value,
        receipt,
        ev.amount_minor,
        s.currency,
    )
    return Transition(s, (cmd,))


def _price_corrected(s: Session, ev: e.PriceCorrected, now: datetime) -> Transition:
    over = s.refundable_minor - ev.total_minor
    if s.state is not State.COMPLETED or over <= 0:
        return Transition(
            replace(s, notes=_note(s, f"price corrected to {ev.total_minor}: nothing to refund"))
        )
    request = e.RefundRequested(s.id, ev.event_id, over, ev.reason, "cdr", ev.day_closed)
    return _refund_requested(s, request, now)


def _refund_result(s: Session, ev: e.TerminalResultArrived) -> Transition:
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
    done = replace(sent, status=status, receipt_no=ev.receipt_no, message=ev.message)
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
    return Transition(
        s, (c.Enqueue(f"{s.id}:refund:{done.id}", f"session:{s.id}", "session.refund", payload),)
    )


# ---- building blocks --------------------------------------------------------------------------


def _hold(s: Session, receipt: int | None) -> Hold | None:
    if receipt is None:
        return s.current
    return next((h for h in s.holds if h.receipt_no == receipt), None)


def _replace_hold(s: Session, old: Hold, new: Hold) -> Session:
    return replace(s, holds=tuple(new if h is old else h for h in s.holds))


def _first_hold_uncertain(s: Session) -> Session:
    """A top-up extends the first hold: one whose fate is open leaves that hold's amount open."""
    return _replace_hold(s, s.holds[0], replace(s.holds[0], uncertain=True))


def _targets(s: Session, amount: int) -> Session:
    """Spread ``amount`` over the holds in order: the first ones are captured, the rest released."""
    left, holds = amount, []
    for h in s.holds:
        if h.status is not HoldStatus.OPEN:
            holds.append(h)
            continue
        take = min(left, h.amount_minor)
        holds.append(replace(h, target_minor=take))
        left -= take
    return replace(s, holds=tuple(holds))


def _price(s: Session, priced: tuple[Reading, ...], policy: Policy, **changes: Any) -> Session:
    """The session with its price (incl. and excl. taxes) for these readings, and ``changes``
    made in the same copy (a 40-field session is copied once, not twice)."""
    tariff = policy.pinned(s)
    if tariff is None or not priced:
        return replace(s, price_minor=0, price_excl="0", vat=(), **changes)
    if (
        tariff.currency != s.currency
    ):  # config validate refuses such a route; never price across currencies
        raise InvariantViolated(
            f"session {s.id} in {s.currency} priced with tariff {tariff.id} in {tariff.currency}"
        )
    p = policy.pricer.price(tariff, [Sample(r.at, r.energy_wh) for r in priced], policy.tz)
    return replace(
        s,
        price_minor=p.minor,
        price_excl=str(p.excl_vat),
        vat=vat_breakdown(p.nets, p.minor, s.currency),
        **changes,
    )


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
    signed = _signed_energy(s)
    if signed is not None:
        if signed != energy:
            notes = (
                f"billed {signed} Wh from the meter's signed readings (the charger said {energy} "
                f"Wh)",
            )
        energy = signed
    elif s.meter_records:
        notes = ("no verified signed begin and end reading: billed on the charger's meter reading",)
    if (
        ev.session_energy_wh is not None
        and abs(ev.session_energy_wh - energy) > policy.energy_tolerance_wh
    ):
        notes = (
            *notes,
            f"energy disagreement: billed {energy} Wh, charger reported {ev.session_energy_wh} Wh",
        )
    return energy, notes


def _finalize(
    s: Session, readings: tuple[Reading, ...], now: datetime, policy: Policy
) -> Transition:
    energy = readings[-1].energy_wh if readings else 0
    s = _price(s, readings, policy, readings=readings, billed_energy_wh=energy)
    if energy == 0 and not policy.bill_without_energy and s.price_minor:
        s = replace(
            s,
            price_minor=0,
            price_excl="0",
            vat=(),
            notes=_note(s, "no energy delivered: nothing billed"),
        )
    capture = min(s.price_minor, s.authorized_minor)
    if (
        s.topup_minor and s.holds
    ):  # a top-up still out may raise the first hold before our capture lands
        s = _first_hold_uncertain(s)
    shortfall = s.price_minor - capture
    if shortfall:
        s = replace(
            s,
            shortfall_minor=shortfall,
            notes=_note(s, f"shortfall: priced {s.price_minor}, held {s.authorized_minor}"),
        )
    s = _go(s, Trigger.BILL if capture else Trigger.NOTHING_TO_BILL, attempts=0)
    return _settle_command(_targets(s, capture), now, policy)


def _settle_command(s: Session, now: datetime, policy: Policy) -> Transition:
    """The command that settles the current hold in the session's (capturing/releasing) state."""
    hold = s.current
    if hold is None:
        raise InvariantViolated(f"session {s.id} in {s.state} has no open hold to settle")
    s = replace(s, timer=(TimerKind.ANSWER, now + policy.answer_timeout))
    if s.state is State.CAPTURING:
        s = _replace_hold(s, hold, replace(hold, capture_sent_at=now))
        target = hold.target_minor or 0
        cmd: c.Command = c.Capture(
            f"{s.id}:capture:{hold.receipt_no}",
            s.id,
            s.terminal,
            hold.receipt_no,
            hold.amount_minor,
            target,
            s.currency,
            s.id[:16],
            exact=hold.uncertain,
        )
    else:
        cmd = c.Release(
            f"{s.id}:release:{hold.receipt_no}",
            s.id,
            s.terminal,
            hold.receipt_no,
            hold.amount_minor,
            s.currency,
        )
    return Transition(s, (cmd,))


def _settled(
    s: Session, ev: e.TerminalResultArrived, hold: Hold, now: datetime, policy: Policy
) -> Transition:
    """The terminal approved our capture or release of ``hold``: book what was *asked*."""
    if ev.operation == Operation.CAPTURE:
        target = hold.target_minor or 0
        if ev.amount_minor is not None and ev.amount_minor not in (
            target,
            hold.amount_minor - target,
        ):
            s = replace(
                s,
                discrepancies=(
                    *s.discrepancies,
                    f"capture of hold {hold.receipt_no}: asked {target} of "
                    f"{hold.amount_minor}, terminal answered {ev.amount_minor}",
                ),
            )
        done = replace(
            hold,
            captured_minor=target,
            released_minor=hold.amount_minor - target,
            status=HoldStatus.CAPTURED,
            booking_receipt=ev.receipt_no,
        )
    else:
        done = replace(
            hold,
            released_minor=hold.amount_minor,
            status=HoldStatus.RELEASED,
            booking_receipt=ev.receipt_no,
        )
    return _next(_replace_hold(s, hold, done), now, policy)


def _next(s: Session, now: datetime, policy: Policy) -> Transition:
    """One hold is settled: settle the next one, or finish with a state that sums them up."""
    hold = s.current
    if hold is not None:
        trigger = Trigger.NEXT_CAPTURE if hold.target_minor else Trigger.NEXT_RELEASE
        return _settle_command(_go(s, trigger, attempts=0), now, policy)
    statuses = {(h.status, bool(h.target_minor)) for h in s.holds}
    if any(status is HoldStatus.UNCONFIRMED for status, _ in statuses):
        trigger = Trigger.CAPTURE_UNPROVEN
    elif (HoldStatus.LAPSED, True) in statuses:
        trigger = Trigger.CAPTURE_LAPSED
    elif (HoldStatus.LAPSED, False) in statuses:
        trigger = Trigger.RELEASE_LAPSED
    elif s.captured_minor:
        trigger = Trigger.ALL_CAPTURED
    else:
        trigger = Trigger.ALL_RELEASED
    owed = max(0, s.price_minor - s.captured_minor) + s.unpaid_minor
    if trigger is Trigger.ALL_CAPTURED:
        s = replace(s, captured_at=now)
        if policy.fiscal.signs_each_receipt and not _render(s, now, policy)[0].complete:
            # The money is settled (the outcome goes up now: the CPO invoices from it); the receipt
            # waits a little for the CPO's fiscal signature, then is printed as pending.
            s = _go(
                s,
                Trigger.AWAIT_FISCAL,
                owed_minor=owed,
                receipt=ReceiptState.AWAITING,
                timer=(TimerKind.FISCAL, now + policy.fiscal_wait),
            )
            return Transition(s, _outcome(s))
    s = _go(s, trigger, owed_minor=owed)
    printed: tuple[c.Command, ...] = ()
    if s.state is State.COMPLETED:
        s, printed = _receipt(s, now, policy)
    done = _finish(s)
    return Transition(done.session, (*done.commands, *printed))


# ---- the receipt (fiscal sub-machine: awaiting → complete | pending → delivered_late) ---------


def receipt_facts(s: Session, now: datetime, policy: Policy) -> ReceiptFacts:
    tariff = policy.pinned(s)
    paid = next((h.booking_receipt for h in s.holds if h.booking_receipt is not None), None)
    url = (
        policy.e_receipt_url.replace("{reference}", s.reference or s.id)
        if policy.e_receipt_url
        else None
    )
    return ReceiptFacts(
        reference=s.reference or s.id,
        evse=s.evse,
        at=(s.captured_at or now).astimezone(policy.tz),
        energy_wh=s.billed_energy_wh,
        price_minor=s.price_minor,
        paid_minor=s.captured_minor,
        owed_minor=s.owed_minor,
        currency=s.currency,
        vat=s.vat,
        tariff=tuple(describe(tariff)) if tariff else (),
        card=s.card,
        terminal_receipt=paid,
        e_receipt_url=url,
        meter=proof.proof() if (proof := _meter_proof(s)) else None,
    )


def _fiscal_data(s: Session) -> FiscalData | None:
    if not (s.fiscal or s.fiscal_fields or s.invoice_reference or s.invoice_url):
        return None
    return FiscalData(s.invoice_reference, s.invoice_url, dict(s.fiscal_fields), s.fiscal)


def _render(s: Session, now: datetime, policy: Policy) -> tuple[Receipt, ReceiptFacts]:
    facts = receipt_facts(s, now, policy)
    return policy.fiscal.render(facts, _fiscal_data(s)), facts


def _receipt(s: Session, now: datetime, policy: Policy) -> tuple[Session, tuple[c.Command, ...]]:
    """Render the receipt with what is known now, send it to the terminal and, under a country
    profile, tell the CPO what the driver got (complete, or pending with what is missing)."""
    receipt, _facts = _render(s, now, policy)
    if not receipt.lines:
        return s, ()  # no profile and no CPO lines: the terminal's own payment slip is the receipt
    state = ReceiptState.COMPLETE if receipt.complete else ReceiptState.PENDING
    s = replace(
        s,
        receipt=state,
        receipt_lines=receipt.lines,
        receipt_missing=receipt.missing,
        receipt_upstream=receipt.upstream,
    )
    display = s.terminal in policy.display_only
    lines = policy.fiscal.display(receipt) if display else receipt.lines
    out: list[c.Command] = [
        c.ShowReceipt(f"{s.id}:receipt:{state}", s.id, s.terminal, lines, display)
    ]
    if policy.fiscal.code != "none":
        out.append(_receipt_message(s, state, receipt.upstream))
    return s, tuple(out)


def _receipt_message(s: Session, state: ReceiptState, upstream: tuple[str, ...]) -> c.Enqueue:
    payload = {
        "session_id": s.id,
        "authorization_reference": s.reference,
        "state": state.value,
        "lines": list(upstream),
        "missing": list(s.receipt_missing),
        "invoice_reference": s.invoice_reference,
    }
    return c.Enqueue(f"{s.id}:receipt:{state.value}", f"session:{s.id}", "session.receipt", payload)


def _fiscal(s: Session, ev: e.FiscalDataArrived, now: datetime, policy: Policy) -> Transition:
    """The CPO's fiscal data: printed with the receipt if it is still to be printed; after a
    pending receipt it completes it as an e-receipt (once); otherwise kept for the record."""
    if s.receipt in (ReceiptState.COMPLETE, ReceiptState.LATE) and policy.fiscal.code != "none":
        return Transition(s, note="receipt already complete: fiscal data ignored")
    s = replace(
        s,
        fiscal=tuple(ev.lines) or s.fiscal,
        fiscal_fields=ev.fields or s.fiscal_fields,
        invoice_reference=ev.invoice_reference or s.invoice_reference,
        invoice_url=ev.invoice_url or s.invoice_url,
    )
    if s.state is State.RECEIPTING:
        s = _go(s, Trigger.FISCAL_SIGNED, timer=None)
        s, printed = _receipt(s, now, policy)
        return Transition(s, printed)
    if s.state is not State.COMPLETED:
        return Transition(s)  # before the capture: printed with it
    if policy.fiscal.code == "none":  # no profile: the CPO's lines are printed whenever they come
        lines = tuple(ev.lines)
        return Transition(
            s, (c.ShowReceipt(f"{s.id}:receipt:{ev.event_id}", s.id, s.terminal, lines),)
        )
    if s.receipt is ReceiptState.PENDING:
        receipt, _facts = _render(s, now, policy)
        if receipt.complete:  # the driver has gone: the complete receipt is the e-receipt
            s = replace(
                s,
                receipt=ReceiptState.LATE,
                receipt_missing=(),
                notes=_note(s, "fiscal data delivered after the receipt: e-receipt"),
            )
            return Transition(s, (_receipt_message(s, ReceiptState.LATE, receipt.upstream),))
        s = replace(s, receipt_missing=receipt.missing)
    return Transition(s)


def _next_try(s: Session, now: datetime, policy: Policy) -> datetime | None:
    """When to ask or try again (exponential backoff), or None once that would be too close to
    the moment the hold lapses (or, for a lost pre-auth, past the time to resolve it)."""
    at = now + min(policy.retry_initial * (2**s.attempts), policy.retry_max)
    if s.state is State.AUTH_UNKNOWN or s.expires_at is None:
        limit = s.created_at + policy.resolve_auth_within
    else:
        limit = s.expires_at - policy.give_up_before_expiry
    return at if at < limit else None


def _query(s: Session, now: datetime, policy: Policy) -> Transition:
    s = replace(s, timer=(TimerKind.ANSWER, now + policy.answer_timeout))
    return Transition(s, (c.QueryOpenPreauths(f"{s.id}:query:{s.attempts}", s.id, s.terminal),))


def _expiry_timer(s: Session, now: datetime, policy: Policy) -> tuple[TimerKind, datetime]:
    expires = s.expires_at or now + policy.validity.default
    return TimerKind.EXPIRY, max(now, expires - policy.stop_before_expiry)


def _topup(s: Session, extra: int, now: datetime, policy: Policy) -> Transition:
    first = s.holds[0]
    s = _go(
        s, Trigger.TOP_UP, topup_minor=extra, timer=(TimerKind.ANSWER, now + policy.answer_timeout)
    )
    key = f"{s.id}:topup:{s.authorized_minor}"
    return Transition(
        s,
        (
            c.TopUp(
                key,
                s.id,
                s.terminal,
                first.receipt_no,
                extra,
                s.currency,
                first.trace_no,
                s.id[:16],
            ),
        ),
    )


def _authorize(s: Session, policy: Policy, repeat: bool = False) -> c.AuthorizeCharger:
    """Start charging, under the hold less the safety margin, before the start timer ends;
    ``repeat``: the same again after a restart (the charger link decides whether it can)."""
    start_by = s.timer[1] if s.timer is not None and s.timer[0] is TimerKind.START else None
    cap = max(0, s.authorized_minor - policy.safety_margin_minor)
    return c.AuthorizeCharger(f"{s.id}:authorize", s.id, s.evse, cap, s.currency, start_by, repeat)


def _stop(s: Session, now: datetime, policy: Policy, reason: str) -> Transition:
    s = _go(s, Trigger.CAP, stop_reason=reason, timer=(TimerKind.STOP, now + policy.stop_timeout))
    return Transition(s, (c.StopCharger(f"{s.id}:stop", s.id, s.evse, reason),))


def _finish(s: Session) -> Transition:
    s = replace(s, timer=None)
    return Transition(s, _outcome(s))


def _outcome(s: Session) -> tuple[c.Command, ...]:
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
        "owed_minor": s.owed_minor,
        "shortfall_minor": s.shortfall_minor,
        "unpaid_energy_wh": s.unpaid_energy_wh,
        "unpaid_minor": s.unpaid_minor,
        "price_minor": s.price_minor,
        "price_excl": s.price_excl,
        "energy_wh": s.billed_energy_wh,
        "receipt_no": s.receipt_no,
        "terminal": s.terminal,
        "evse": s.evse,
        "card": dict(s.card),
        "notes": list(s.notes),
        "discrepancies": list(s.discrepancies),
        "invoicer": s.invoicer,
        "invoice_reference": s.invoice_reference,
        # the receipt's invoice and fiscal lines, when it was printed before the outcome went up
        "receipt": [line for line in s.receipt_upstream if not line.startswith("Receipt: ")],
    }
