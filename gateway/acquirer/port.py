"""The acquirer port: modifications of a card payment through the acquirer's online API.

Beside the terminal port, for acquirers that authorise at the terminal but modify online
(Adyen's Terminal API pre-authorises; adjustments, captures, cancels and refunds go to its
Checkout API). Two rules shape this port:

- A modification is keyed by our stable command key, so sending it again after a lost answer
  is the same modification (the acquirer profile turns the key into its idempotency key).
- Sending answers "received" or raises a typed error (gateway.errors.AcquirerError); it never
  answers an outcome. Outcomes arrive only as webhook events (``ModificationEvent``), which
  are the evidence the engine books on; a missing event is a finding, never a success.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from drivers.money import Money
from gateway.errors import ModificationRefused

ModificationKind = Literal["amount_update", "capture", "cancel", "cancel_by_reference", "refund"]
EventCode = Literal[
    "AUTHORISATION_ADJUSTMENT",
    "CAPTURE",
    "CAPTURE_FAILED",
    "CANCELLATION",
    "REFUND",
    "REFUND_FAILED",
    "TECHNICAL_CANCEL",
]
EVENT_CODES: frozenset[str] = frozenset(EventCode.__args__)  # type: ignore[attr-defined]

# Which events settle which modification, and the events that say "it failed" even when their
# ``success`` flag is true (the acquirer received the failure report successfully).
SETTLED_BY: dict[ModificationKind, frozenset[str]] = {
    "amount_update": frozenset({"AUTHORISATION_ADJUSTMENT"}),
    "capture": frozenset({"CAPTURE", "CAPTURE_FAILED"}),
    "cancel": frozenset({"CANCELLATION"}),
    "cancel_by_reference": frozenset({"TECHNICAL_CANCEL", "CANCELLATION"}),
    "refund": frozenset({"REFUND", "REFUND_FAILED"}),
}
FAILURE_EVENTS: frozenset[str] = frozenset({"CAPTURE_FAILED", "REFUND_FAILED"})


@dataclass(frozen=True, slots=True)
class Modification:
    """One request to the acquirer. ``payment_reference`` is the acquirer's reference of the
    payment it modifies (for a refund: of the capture); ``merchant_reference`` is ours, used
    only to cancel a payment whose acquirer reference never reached us. ``authorised`` is the
    ceiling a capture is checked against before it is sent."""

    command_key: str
    kind: ModificationKind
    payment_reference: str | None = None
    merchant_reference: str | None = None
    amount: Money | None = None
    authorised: Money | None = None

    def __post_init__(self) -> None:
        if not self.command_key:
            raise ModificationRefused("a modification needs our stable command key")
        by_reference = self.kind == "cancel_by_reference"
        if by_reference and not self.merchant_reference:
            raise ModificationRefused("a cancel by merchant reference needs that reference")
        if not by_reference and not self.payment_reference:
            raise ModificationRefused(f"a {self.kind} needs the acquirer's payment reference")
        needs_amount = self.kind in ("amount_update", "capture", "refund")
        if needs_amount != (self.amount is not None):
            raise ModificationRefused(
                f"a {self.kind} {'needs' if needs_amount else 'takes no'} amount"
            )
        if self.kind == "capture":
            self._check_ceiling()

    def _check_ceiling(self) -> None:
        """A capture above the authorised amount is refused here, before anything is sent:
        the acquirer might capture it and the card holder would pay more than they agreed."""
        if self.authorised is None or self.amount is None:
            raise ModificationRefused("a capture needs the authorised amount it may not exceed")
        if self.amount.currency != self.authorised.currency:
            raise ModificationRefused(
                f"capture in {self.amount.currency}, but authorised in {self.authorised.currency}"
            )
        if self.amount.minor > self.authorised.minor:
            raise ModificationRefused(
                f"capture of {self.amount} is above the authorised {self.authorised}; not sent"
            )


@dataclass(frozen=True, slots=True)
class Received:
    """The acquirer took the request. Not an outcome: its webhook is."""

    command_key: str
    acquirer_reference: str  # the modification's own reference (Adyen: its pspReference)


@dataclass(frozen=True, slots=True)
class ModificationEvent:
    """One webhook notification about a modification, as the acquirer reported it."""

    event: str  # one of EVENT_CODES
    psp_reference: str  # the modification's reference
    original_reference: str | None  # the payment's reference
    merchant_reference: str
    merchant_account: str
    success: bool
    amount: Money | None
    reason: str
    event_date: str
    live: bool

    @property
    def dedupe_key(self) -> str:
        """Adyen's documented identity of a notification: a repeat carries the same four."""
        success = "true" if self.success else "false"
        return f"{self.psp_reference}|{self.event}|{success}|{self.original_reference or ''}"

    @property
    def confirms(self) -> bool:
        """Positive evidence that the modification was applied."""
        return self.success and self.event not in FAILURE_EVENTS


class Acquirer(Protocol):
    """What the engine may ask of an acquirer. Every call is safe to repeat with the same
    command key; each returns ``Received`` or raises an AcquirerError."""

    name: str

    async def update_amount(
        self, command_key: str, *, payment_reference: str, amount: Money
    ) -> Received: ...

    async def capture(
        self, command_key: str, *, payment_reference: str, amount: Money, authorised: Money
    ) -> Received: ...

    async def cancel(self, command_key: str, *, payment_reference: str) -> Received: ...

    async def cancel_by_reference(
        self, command_key: str, *, merchant_reference: str
    ) -> Received: ...

    async def refund(
        self, command_key: str, *, payment_reference: str, amount: Money
    ) -> Received: ...

    async def send(self, modification: Modification) -> Received:
        """Any of the above, as a record (what the durable queue replays)."""
        ...
