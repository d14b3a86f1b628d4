"""The one driver interface the engine uses: ``PaymentTerminal``, with typed results.

A second protocol (nexo, OPI, Payter) must fit behind this without changing the engine.
The engine never sees bytes: every operation returns a ``TerminalResult`` whose
``outcome`` says what happened to the money, and card data is masked (first 6, last 4).

A hold (and a booking) is named by ``ref``: opaque text the driver gives and takes back, never
read by the engine (ZVT: the receipt number as decimal text without padding, ``str(int)``; nexo:
the POI transaction, ``TransactionID@TimeStamp``).

``Outcome.UNKNOWN`` is the important one: the terminal accepted the command but the result
never arrived (timeout, link lost). The engine must then *ask* the terminal (open
pre-authorisations, last result) rather than assume or repeat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from drivers.money import Money


class Outcome(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"  # the card, issuer or customer said no
    ABORTED = "aborted"  # cancelled (abort key, abort command, card removed, customer timeout)
    BUSY = "busy"  # the terminal cannot take the command now; nothing happened
    ERROR = "error"  # the terminal refused or failed; nothing happened to money
    UNKNOWN = "unknown"  # the command ran but its result was lost: ask, never repeat blindly


@dataclass(frozen=True, slots=True)
class CardInfo:
    masked_pan: str | None = None  # first 6 and last 4 only
    brand: str | None = None
    aid: str | None = None
    is_payment_card: bool = True  # False for an RFID/membership card from a card read


@dataclass(frozen=True, slots=True)
class BrandTotal:
    brand: str  # card group: girocard, mastercard, visa, amex, jcb, diners, other
    count: int
    amount_minor: int
    currency: str  # ISO 4217 alpha: totals are per card group and currency


@dataclass(frozen=True, slots=True)
class TerminalResult:
    operation: str
    outcome: Outcome
    message: str = ""
    result_code: int | None = None
    amount: Money | None = None  # what the terminal approved or booked
    ref: str | None = None  # the hold's or booking's opaque reference, as the driver gives it
    # ``ref`` as the terminal prints it on its slip (ZVT: 0042 for "42"), for people matching our
    # FAC and receipt with the slip; None: the ref itself is what is printed
    ref_display: str | None = None
    trace_no: int | None = None
    terminal_id: str | None = None
    card: CardInfo | None = None
    receipt_lines: tuple[str, ...] = ()
    open_refs: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)
    unreachable: bool = False  # the terminal could not be reached or did not answer (not a refusal)
    totals: tuple[BrandTotal, ...] = ()  # end of day: what the terminal booked in the closed batch
    # end of day: the batch's first and last receipt, where the protocol has a range (ZVT)
    batch_range: tuple[str, str] | None = None

    @property
    def approved(self) -> bool:
        return self.outcome is Outcome.APPROVED


# Called with the result *before* the terminal is told it arrived (ZVT: before the ECR acks
# 04 0F), so a crash between the two can never lose an approved payment.
PersistHook = Callable[[TerminalResult], Awaitable[None]]


class PaymentTerminal(Protocol):
    name: str

    async def connect(self) -> TerminalResult: ...
    async def close(self) -> None: ...
    async def status(self) -> TerminalResult: ...
    async def read_card(self, timeout_s: int) -> TerminalResult: ...
    async def preauthorize(
        self, amount: Money, reference: str, persist: PersistHook | None = None
    ) -> TerminalResult: ...
    async def add_hold(
        self,
        first_ref: str,
        first_trace: int | None,
        amount: Money,
        reference: str,
        persist: PersistHook | None = None,
    ) -> TerminalResult:
        """One more hold on the same card session (incremental strategy). The result's receipt
        is the new hold's; a terminal that increases the first hold answers with its ref.
        A terminal that cannot do it answers ERROR, and the engine stops the charge at the cap."""
        ...

    async def capture(
        self,
        ref: str,
        held: Money,
        amount: Money,
        reference: str,
        persist: PersistHook | None = None,
        exact: bool = False,
    ) -> TerminalResult:
        """Book ``amount`` of the hold, the rest released. ``exact``: the hold may be bigger than
        ``held`` (a top-up of it was lost), so book the amount itself, never release a
        difference."""
        ...

    async def sale(self, amount: Money, persist: PersistHook | None = None) -> TerminalResult: ...
    async def release(
        self, ref: str, held: Money, persist: PersistHook | None = None
    ) -> TerminalResult: ...
    async def reverse(self, ref: str, persist: PersistHook | None = None) -> TerminalResult: ...
    async def refund(self, amount: Money, persist: PersistHook | None = None) -> TerminalResult: ...
    async def abort(self) -> TerminalResult: ...
    async def end_of_day(self) -> TerminalResult: ...
    async def diagnose(self) -> TerminalResult: ...
    async def display(self, lines: Sequence[str], seconds: int) -> TerminalResult: ...
    async def print_text(self, lines: Sequence[str]) -> TerminalResult: ...
    async def open_preauthorizations(self) -> TerminalResult: ...
    async def last_result(self) -> TerminalResult: ...


@runtime_checkable
class HoldLedger(Protocol):
    """A driver that keeps its own ledger of the holds it made (nexo: the POI has no listing,
    ``open_preauthorizations`` reads the driver's state file). On a terminal whose captures and
    cancels go to the acquirer the POI never sees them, so the runner tells the driver once the
    acquirer's webhook settled one; otherwise the hold stays "open" there for ever. A driver
    whose terminal lists its own holds (ZVT) does not take part."""

    def note_closed(self, ref: str, *, captured: bool) -> None:
        """The hold ``ref`` was captured (``captured``) or cancelled elsewhere: closed, stored
        before the call returns so a restart does not reopen it; an unknown ref is ignored."""
        ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a terminal can do, as data: the engine and ``config validate`` read it, so a policy
    a terminal cannot carry out is refused when the site is configured, not at a card."""

    reservations: bool = True  # pre-authorisations completed later
    incremental: bool = False  # reservation extensions (top-ups)
    release_open: bool = True  # an uncompleted reservation can be released
    refunds: bool = True
    card_first: bool = False  # a card read before any amount
