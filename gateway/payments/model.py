"""What a session knows: a small core (ids, state, deadlines) and one frozen record per
concern — its holds, its bill, its metering, its invoice and receipt, its refunds.

Field names are unique across the parts, so ``update(session, name=value)`` finds the part a
field lives in and the stored JSON (``record.py``) can stay one flat object that older rows
share. Which state may follow which is ``states.py``; how a session moves is ``session.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.fiscal.meter import SignedMeter
from gateway.fiscal.receipt import ReceiptState, VatLine
from gateway.payments.events import LastResult, TimerKind
from gateway.payments.refunds import Refund, RefundStatus
from gateway.payments.states import FINAL, State


class HoldStatus(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"  # booked (the rest of it released) on positive evidence
    RELEASED = "released"
    LAPSED = "lapsed"  # not settled before its validity ended: the issuer lets it go
    UNCONFIRMED = "unconfirmed"  # gone from the terminal, no evidence of our capture


@dataclass(frozen=True, slots=True)
class Hold:
    """One pre-authorisation at the terminal (a session has one, plus one per top-up)."""

    ref: str
    amount_minor: int
    trace_no: int | None = None
    target_minor: int | None = None  # what to capture from it: ``capture.capture_plan``
    captured_minor: int = 0
    released_minor: int = 0
    status: HoldStatus = HoldStatus.OPEN
    booking_ref: str | None = None  # the terminal's receipt for the capture or release
    capture_sent_at: datetime | None = None  # when the last capture command for it left
    # when the terminal booked it: a session's holds may be captured in different batches (a
    # retried top-up capture after the end of day), reconciliation counts each in its own
    captured_at: datetime | None = None
    # A top-up of this hold was lost, or was still out when the charge stopped: the terminal may
    # hold more than ``amount_minor``, so it is captured by booking the amount (ZVT 06 24), never
    # by releasing a difference (06 23).
    uncertain: bool = False
    # the trace number of the last top-up that raised this hold: the terminal's last result with
    # it is that top-up, never a later one whose answer was lost (``topups.topup_enquired``)
    topup_trace: int | None = None
    # A release whose answer was lost: when an enquiry first answered without this hold. One
    # list proves nothing (a stale or empty answer); a second one at least the first retry
    # interval later that omits it too proves the release (``lost_settlement``). Stored so a
    # restart keeps the first sighting; a row stored before it has none.
    absent_since: datetime | None = None

    @property
    def open_minor(self) -> int:
        return self.amount_minor - self.captured_minor - self.released_minor


@dataclass(frozen=True, slots=True)
class Reading:
    at: datetime
    energy_wh: int  # since the charge started
    trusted: bool


class BilledTo(StrEnum):
    """Which readings the bill stands on (``metering.billed_energy``)."""

    NOT_YET = ""  # still charging, or never charged
    STOP = "stop"  # the charger's stop report (and the meter's signed readings)
    LAST_TRUSTED = "last_trusted"  # a fault or no stop confirmation: the last trusted reading


@dataclass(frozen=True, slots=True)
class Bill:
    """What the session costs and what of it is owed."""

    price_minor: int = 0
    price_excl: str = "0"  # the price before taxes (Decimal text), for the upstream tax split
    vat: tuple[VatLine, ...] = ()  # the price's VAT breakdown per rate, adding up to price_minor
    owed_minor: int = 0  # priced but not captured with evidence: a debt for reconciliation
    shortfall_minor: int = 0  # price above what was held (part of owed)
    unpaid_energy_wh: int = 0  # energy reported and never billed (no start; a late stop report)
    unpaid_minor: int = 0  # its price (part of owed)
    captured_at: datetime | None = None
    # The CPO's corrected total (a later CDR): the debt follows it (``corrections.py``).
    corrected_minor: int | None = None
    correction_waiting: str = ""  # a correction's id whose refund waits for one in flight
    debt_resolved: str = ""  # why a person settled the debt (``corrections.debt_resolved``)
    # Refunds given (done) from a capture the acquirer undid afterwards (``capture_undone.py``):
    # paid out of money never received, so the refunds stand above what is captured by this much
    # and no more (``session.violations``); the undone capture itself is owed.
    refunded_before_undo_minor: int = 0


@dataclass(frozen=True, slots=True)
class Metering:
    """What the charger and the meter said. ``readings`` only ever grows (the store keeps it as
    an append-only table, one row per reading)."""

    meter_start_wh: int | None = None
    readings: tuple[Reading, ...] = ()
    billed_energy_wh: int = 0
    reported_energy_wh: int | None = None  # the charger's own total, for reconciliation
    stop_meter_wh: int | None = None  # the meter's reading in the charger's stop report
    stopped_at: datetime | None = None  # when the stop report arrived
    billed_to: BilledTo = BilledTo.NOT_YET
    meter_records: tuple[SignedMeter, ...] = ()  # the meter's signed records (OCMF), by hash

    def billed_readings(self) -> tuple[Reading, ...]:
        """The readings the price stands on: all of them after a stop report (its stop reading
        last); after a fault or a missing stop confirmation, the trusted ones."""
        if self.billed_to is BilledTo.LAST_TRUSTED:
            return tuple(r for r in self.readings if r.trusted) or self.readings[:1]
        return self.readings


@dataclass(frozen=True, slots=True)
class Invoice:
    """Who invoices, the CPO's fiscal data, and the receipt as printed and sent upstream."""

    invoicer: str | None = None  # "cpo" / "ptp" from the CDR (OCPI flow); None: the local flow
    invoice_reference: str | None = None
    invoice_url: str | None = None
    fiscal: tuple[str, ...] = ()  # the CPO's free receipt lines
    fiscal_fields: tuple[tuple[str, str], ...] = ()  # its fiscal signature fields (zki, jir, …)
    receipt: ReceiptState = ReceiptState.NONE
    receipt_lines: tuple[str, ...] = ()  # what was sent to the terminal, as sent
    receipt_missing: tuple[str, ...] = ()  # required fields the receipt lacked
    receipt_upstream: tuple[str, ...] = ()  # its invoice and fiscal lines for the CPO


@dataclass(frozen=True, slots=True)
class Session:
    # core: who, where, which state, what next
    id: str
    evse: str
    terminal: str
    currency: str
    state: State
    created_at: datetime
    hold_minor: int = 0  # the hold asked for
    target_amount_minor: int | None = None  # the amount the driver declared: a cap, not a hint
    target_energy_wh: int | None = None  # the energy the driver declared: the charge stops there
    reference: str | None = None  # OCPI authorization_reference, set at approval
    card: dict[str, str] = field(default_factory=dict)
    # the terminal's refs as it prints them, where that differs from the ref (ZVT: "42" is
    # printed 0042), given by the driver; a row stored before this field shows the ref itself
    ref_display: dict[str, str] = field(default_factory=dict)
    scheme: str | None = None
    expires_at: datetime | None = None
    timer: tuple[TimerKind, datetime] | None = None
    attempts: int = 0
    # terminal operations whose outcome we never saw (their trace may be the terminal's last)
    lost_results: int = 0
    held_result: LastResult | None = None  # the in-flight result, stored before acknowledged
    topup_refused: bool = False
    topup_minor: int = 0
    # the top-up's answer was lost and the terminal was asked about it (``topups.topup_enquired``)
    topup_asked: bool = False
    stop_reason: str | None = None
    notes: tuple[str, ...] = ()
    discrepancies: tuple[str, ...] = ()  # what the terminal said that does not fit what was asked
    tariff_id: str | None = None  # pinned when the session starts
    route: str | None = None  # the route (acquirer profile) that took it: its hold policy
    # the parts
    holds: tuple[Hold, ...] = ()
    bill: Bill = field(default_factory=Bill)
    metering: Metering = field(default_factory=Metering)
    invoice: Invoice = field(default_factory=Invoice)
    refunds: tuple[Refund, ...] = ()  # money given back after the capture (refunds.py)

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
    def ref(self) -> str | None:
        """The first hold's reference (the one a session is known by at the terminal)."""
        return self.holds[0].ref if self.holds else None

    def shown(self, ref: str | None) -> str | None:
        """A ref as the terminal prints it (its slip), the ref itself when the driver gave none."""
        return None if ref is None else self.ref_display.get(ref, ref)

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


# The parts whose fields ``update`` reaches by name, and the derived money view.
PARTS: dict[str, type[Bill] | type[Metering] | type[Invoice]] = {
    "bill": Bill,
    "metering": Metering,
    "invoice": Invoice,
}
PART_OF: dict[str, str] = {f.name: part for part, cls in PARTS.items() for f in fields(cls)}
_CORE = {f.name for f in fields(Session)}
assert not _CORE & PART_OF.keys(), "a field name must be unique across the session's parts"  # noqa: S101


def update(s: Session, **changes: Any) -> Session:
    """``replace`` that finds each field in the core or in the part it belongs to."""
    core: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for name, value in changes.items():
        part = PART_OF.get(name)
        if part is None:
            core[name] = value
        else:
            parts.setdefault(part, {})[name] = value
    for part, values in parts.items():
        core[part] = replace(getattr(s, part), **values)
    return replace(s, **core)


def replace_hold(s: Session, old: Hold, new: Hold) -> Session:
    return replace(s, holds=tuple(new if h is old else h for h in s.holds))


def hold_by_ref(s: Session, ref: str | None) -> Hold | None:
    """The hold a result names, or the one being settled when it names none."""
    if ref is None:
        return s.current
    return next((h for h in s.holds if h.ref == ref), None)


BY_REFERENCE = "by-reference:"  # a hold named only by our sale reference (its own never came)


def sale_reference(session_id: str) -> str:
    """The reference the terminal is given with a payment (ZVT's BMP60, nexo's
    SaleTransactionID, which Adyen keeps as the payment's merchant reference): short and tied to
    the session, so a payment whose own reference never reached us can still be named."""
    return session_id[:16]


def by_reference(ref: str) -> str | None:
    """Our sale reference, when the hold ``ref`` is known only by it (``BY_REFERENCE``)."""
    return ref.removeprefix(BY_REFERENCE) if ref.startswith(BY_REFERENCE) else None


def authorization_reference(session_id: str) -> str:
    """CiString(36), unique per session and stable across restarts (derived, never random)."""
    return f"EVP-{session_id}"[:36]
