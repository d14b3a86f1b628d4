"""Inputs of the session state machine. Every event has an ``event_id``: the store applies a
step per (session, event_id) once, so a redelivered event is a no-op.

An event that carries money or billed energy is built with keywords only (``kw_only``): an
amount and a hold reference, or two energies, side by side cannot be swapped by position."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from drivers.base import Outcome
from gateway.fiscal.meter import SignedMeter
from gateway.payments.preauth import Target


class Operation(StrEnum):
    """The terminal operations whose results the engine consumes."""

    PREAUTHORIZE = "preauthorize"
    TOPUP = "topup"
    CAPTURE = "capture"
    REFUND = "refund"
    REVERSAL = "reversal"
    RELEASE = "release"


class TimerKind(StrEnum):
    START = "start"  # the charger must start before this
    EXPIRY = "expiry"  # stop charging before the hold's validity ends
    SILENCE = "silence"  # no meter reading for the EVSE's meter-silence deadline: ask the charger
    STATE = "state"  # the charger, asked for its state, must have reported by now: stop and bill
    STOP = "stop"  # the charger must confirm the stop before this
    ANSWER = "answer"  # a terminal command (or enquiry) must have answered by now
    RETRY = "retry"  # try the capture or release again
    QUERY = "query"  # ask the terminal again
    FISCAL = "fiscal"  # stop waiting for the CPO's fiscal data: print the receipt as pending


@dataclass(frozen=True, slots=True)
class CardPresented:
    """A driver asked to pay at an EVSE (card at the terminal or start on the charger)."""

    session_id: str
    event_id: str
    evse: str
    terminal: str
    currency: str
    target: Target | None = None
    route: str | None = (
        None  # the route (acquirer profile) that chose the terminal, if routes are configured
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalResultArrived:
    """The outcome of a terminal command (preauthorize, topup, capture, release)."""

    session_id: str
    event_id: str
    operation: Operation
    outcome: Outcome
    amount_minor: int | None = None  # what the terminal's result carries (its echo)
    ref: str | None = None  # the terminal's reference of *this* transaction (opaque text)
    ref_display: str | None = None  # ``ref`` as the terminal prints it (drivers.base)
    message: str = ""
    card: dict[str, str] = field(default_factory=dict)  # masked_pan, brand, aid — never a full PAN
    for_ref: str | None = None  # the hold a capture, release or top-up was sent for
    trace_no: int | None = None
    # the refund an acquirer's webhook is about: a late one still decides a refund that was
    # marked unknown at its deadline (the webhook is the evidence)
    refund_id: str | None = None
    # Stored before the gateway acknowledges it to the terminal. A terminal that never hears the
    # acknowledgement reverses the transaction (ZVT 2.2.8): the session decides what such a
    # result may settle (``session._terminal_result``).
    provisional: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LastResult:
    """The terminal's repeat of its last result (ZVT 06 20): positive evidence of what it did."""

    approved: bool
    ref: str | None
    amount_minor: int | None
    # its trace number: tells a top-up of a hold from the hold's own approval (same ref, and the
    # same amount when the top-up asks what the hold held); a row stored before it has none
    trace_no: int | None = None
    # ``ref`` as the terminal prints it (drivers.base ``ref_display``): a booking proven by this
    # result shows on our receipt as on the slip; a row stored before it has none (the ref)
    ref_display: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureEvidence:
    """What the terminal's end-of-day totals prove about an unconfirmed capture
    (``gateway.payments.evidence``): ``captured`` or not, and the evidence in words."""

    session_id: str
    event_id: str
    captured: bool
    evidence: str


@dataclass(frozen=True, slots=True)
class OpenPreauthsReported:
    """The terminal's open pre-authorisations and its last result; ``orphans`` are the open
    holds no other session owns (computed by the host, which sees every session)."""

    session_id: str
    event_id: str
    refs: tuple[str, ...]
    orphans: tuple[str, ...] = ()
    failed: bool = False  # the enquiry itself failed: try again later
    busy: bool = False  # ...because the terminal answered busy: ask again after the first interval
    last: LastResult | None = None
    # When ``last`` was asked, if earlier than this report (the terminal runner's snapshot at
    # start): sessions started on the terminal after it cannot have made that result.
    last_asked_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrphanFound:
    """The terminal sweep found a hold that no open session owns."""

    session_id: str
    event_id: str
    terminal: str
    ref: str
    currency: str


@dataclass(frozen=True, slots=True)
class ChargerStarted:
    session_id: str
    event_id: str
    meter_wh: int
    evse: str | None = None  # the EVSE the message came from (None: a trusted internal source)


@dataclass(frozen=True, slots=True)
class MeterValue:
    session_id: str
    event_id: str
    meter_wh: int
    trusted: bool = True  # signed (OCMF-verified) or from a calibrated meter
    signed: SignedMeter | None = (
        None  # the meter's signed record with this value, checked at the edge
    )
    evse: str | None = None  # the EVSE the message came from: must be the session's


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerStopped:
    session_id: str
    event_id: str
    meter_wh: int | None = None
    session_energy_wh: int | None = None  # the charger's own total, if it reports one
    reason: str = "stopped"
    invoicer: str | None = None  # "cpo" or "ptp" when the CPO's CDR decided who invoices
    invoice_reference: str | None = None
    signed: SignedMeter | None = (
        None  # the meter's signed record of the transaction (OCMF), checked
    )
    evse: str | None = None  # the EVSE the message came from: must be the session's


@dataclass(frozen=True, slots=True)
class ChargerFaulted:
    """A fault or a lost charger link mid-charge: bill what the last trusted reading shows."""

    session_id: str
    event_id: str
    reason: str
    evse: str | None = None  # the EVSE the message came from: must be the session's


@dataclass(frozen=True, slots=True)
class TimerFired:
    session_id: str
    event_id: str
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class Resumed:
    """The gateway restarted: re-establish what was in flight (ask, never repeat blindly)."""

    session_id: str
    event_id: str


@dataclass(frozen=True, slots=True)
class FiscalDataArrived:
    """The CPO's invoicing data for a session (custom module DEEVPfiscal): free receipt lines,
    its invoice, and the fiscal signature fields its country requires (``zki``, ``jir``, …)."""

    session_id: str
    event_id: str
    lines: tuple[str, ...]
    invoice_reference: str | None = None
    invoice_url: str | None = None
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundRequested:
    """Give back ``amount_minor`` of a completed session's capture (a technician, the CPO)."""

    session_id: str
    event_id: str  # the request's idempotency key: the same request twice is one refund
    amount_minor: int
    reason: str
    source: str = "technician"
    day_closed: bool = False  # set by the host: an end of day has closed the capture's batch
    inbox_id: str | None = None  # the stored request this event carries out
    # set by the host from the policy: the terminal's modifications go to an acquirer online;
    # the terminal takes card-present refunds (06 31) after its batch closed
    acquirer: bool = False
    card_present: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceCorrected:
    """The CPO's corrected price (a later CDR): what was captured above it is refunded."""

    session_id: str
    event_id: str
    total_minor: int
    reason: str
    day_closed: bool = False
    currency: str | None = None  # the CDR's: one in another currency is refused, never netted
    acquirer: bool = False  # as RefundRequested's, set by the host
    card_present: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class DebtResolved:
    """A technician explained what a session owes (paid in cash, written off, found in the
    acquirer's report): its debt is settled, with the reason, as a journaled engine step."""

    session_id: str
    event_id: str
    reason: str
    part: str = "owed"  # "owed": all of it; "shortfall": the part above the holds


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSettled:
    """A person settled a refund whose outcome never reached us (``sent`` or ``unknown``)
    against the terminal's or the acquirer's own record: it was paid (``refunded``) or not."""

    session_id: str
    event_id: str
    refund_id: str
    refunded: bool
    evidence: str  # what the person looked at (the terminal's journal, the acquirer's report)
    by: str  # who settled it
    ref: str | None = None  # the refund's reference in that record, when it shows one


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeContradicted:
    """Evidence that came after the session's outcome and says otherwise (an acquirer's
    CAPTURE_FAILED after the CAPTURE that was booked): recorded, never applied silently."""

    session_id: str
    event_id: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureUndone:
    """The acquirer reported the booked capture of hold ``ref`` failed after all (its
    CAPTURE_FAILED after the CAPTURE): the booking is undone (``capture_undone.py``)."""

    session_id: str
    event_id: str
    ref: str
    detail: str


Event = (
    CardPresented
    | TerminalResultArrived
    | OpenPreauthsReported
    | CaptureEvidence
    | OrphanFound
    | ChargerStarted
    | MeterValue
    | ChargerStopped
    | ChargerFaulted
    | TimerFired
    | Resumed
    | FiscalDataArrived
    | RefundRequested
    | PriceCorrected
    | DebtResolved
    | RefundSettled
    | OutcomeContradicted
    | CaptureUndone
)
