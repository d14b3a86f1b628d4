"""A refund of a captured session: money given back, fully or in part, as its own record.

It happens after the session is final (its capture is booked), so it is not a state of the
session's machine but a record on it, with its own small life: ``sent`` to the terminal, then
``done`` (the terminal's approval and receipt), ``failed`` (refused: no money moved; a new
request may follow), ``unknown`` (no answer: reconciliation lists it until a person settles
it), or ``other_card`` (a card-present refund paid to a card that is not the session's). A
request that cannot be honoured (more than is left, another refund in flight, a session that
captured nothing) is kept as ``refused`` with the reason. The method follows the
terminal's batch: a reversal (ZVT 06 30) of the whole capture while the day is still open at
the terminal, else a refund (06 31) — a reversal cannot give back part of a payment, and after
the end of day it cannot be made at all; a card-present refund only where the terminal allows it
(``card_present_refunds``). A terminal whose modifications go to an acquirer's online API refunds
there (``acquirer``): ``sent`` is the acquirer's "received", the webhook decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RefundStatus(StrEnum):
    SENT = "sent"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"
    REFUSED = "refused"
    # A card-present refund (06 31) the terminal paid to another card than the session's: the
    # money left, but not to the driver (a discrepancy; reconciliation lists it).
    OTHER_CARD = "other_card"


class RefundMethod(StrEnum):
    REVERSAL = "reversal"  # ZVT 06 30, by the capture's receipt, while its batch is open
    REFUND = "refund"  # ZVT 06 31, any amount, the card presented at the terminal
    # the acquirer's online refund against the payment's reference (a terminal whose
    # modifications go online): needs neither the terminal nor the card
    ACQUIRER = "acquirer"


@dataclass(frozen=True, slots=True)
class Refund:
    id: str  # the request's idempotency key
    amount_minor: int
    reason: str
    source: str  # technician, cdr (a corrected CDR), cpo
    method: RefundMethod
    status: RefundStatus
    at: datetime
    ref: str | None = None  # the terminal's receipt for it
    message: str = ""
    # who settled it by hand when its outcome never came (``evpay sessions refund-resolve``)
    settled_by: str = ""

    @property
    def pending(self) -> bool:
        return self.status in (RefundStatus.SENT, RefundStatus.UNKNOWN)
