"""What reconciliation reads and says: the facts the CLI loads from the store (a stored
session row becomes ``SessionFacts`` through ``session_facts``; the end-of-day batches, the
CDRs, the acquirer's overdue and unclaimed webhooks) and the ``Finding`` it reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.payments.refunds import RefundStatus
from gateway.payments.schemes import brand_group


@dataclass(frozen=True, slots=True)
class SessionFacts:
    id: str
    terminal: str
    state: str
    currency: str
    brand: str  # card group
    created_at: datetime
    updated_at: datetime
    captured_at: datetime | None
    captured_minor: int
    price_minor: int
    owed_minor: int = 0
    shortfall_minor: int = 0
    billed_energy_wh: int = 0
    reported_energy_wh: int | None = None  # what the charger said it delivered
    reference: str | None = None
    reversed: tuple[tuple[datetime, int], ...] = ()  # (when, amount) of reversals (06 30) done
    refunded: tuple[tuple[datetime, int], ...] = ()  # (when, amount) of refunds (06 31) done
    refunds_unsettled: int = 0  # refunds sent without an answer
    # Captured above the CPO's corrected total and not given back (its refund refused, or paid
    # to another card): money owed to the driver.
    refund_due_minor: int = 0
    paid_elsewhere_minor: int = 0  # card-present refunds the terminal paid to another card
    # The terminal books each captured hold on its own: a session paid from its first hold
    # and a top-up is two bookings in the batch's count.
    bookings: int = 1
    # (when, amount) of each captured hold: the holds of one session may be booked in different
    # batches (a top-up captured after a retry past the end of day). Empty (a row from before
    # holds had their own time): the session's captured_at/captured_minor/bookings stand for all.
    captures: tuple[tuple[datetime, int], ...] = ()


@dataclass(frozen=True, slots=True)
class BatchFacts:
    terminal: str
    period_start: datetime | None
    at: datetime
    currency: str
    totals: Mapping[str, tuple[int, int]]  # card group -> (count, amount)


@dataclass(frozen=True, slots=True)
class OverdueModification:
    """A modification the acquirer took ("received") with no webhook by its deadline."""

    key: str  # our command key
    kind: str  # capture, cancel, amount_update, refund
    session: str | None
    deadline: datetime
    amount_minor: int = 0
    currency: str = ""


@dataclass(frozen=True, slots=True)
class UnclaimedWebhook:
    """A webhook saying the acquirer captured or refunded money that no modification of ours
    took as its outcome (made elsewhere, or for another amount than we asked)."""

    event: str  # CAPTURE or REFUND
    psp_reference: str
    payment: str | None
    amount_minor: int = 0
    currency: str = ""


@dataclass(frozen=True, slots=True)
class Facts:
    start: datetime
    end: datetime
    now: datetime
    sessions: Sequence[SessionFacts]
    batches: Sequence[BatchFacts] = ()
    cdrs: Sequence[tuple[str, str | None]] = ()  # (authorization_reference, session id or None)
    unacknowledged: Mapping[str, tuple[str, datetime]] = field(
        default_factory=dict
    )  # session -> (status, since)
    resolutions: Mapping[str, str] = field(default_factory=dict)  # finding key -> reason
    # Sessions outside the window that belong to a batch closed in it: compared with that
    # batch's totals only (their own findings belong to the window they changed in).
    batch_sessions: Sequence[SessionFacts] = ()
    missing_webhooks: Sequence[OverdueModification] = ()
    unclaimed_webhooks: Sequence[UnclaimedWebhook] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    key: str
    kind: str
    detail: str
    sessions: tuple[str, ...] = ()
    amount_minor: int = 0
    currency: str = ""
    resolved: str | None = None  # the technician's reason

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "detail": self.detail,
            "sessions": list(self.sessions),
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "resolved": self.resolved,
        }


def session_facts(row: dict[str, Any]) -> SessionFacts:
    """A stored session row (``Store.sessions_between``) as the facts reconciliation reads."""
    d = row["data"]

    refunds = d.get("refunds", ())

    def done(method: str) -> tuple[tuple[datetime, int], ...]:
        # money that left in the batch, to the driver's card or (06 31) another one
        return tuple(
            (datetime.fromisoformat(r["at"]), int(r["amount_minor"]))
            for r in refunds
            if r["status"] in (RefundStatus.DONE, RefundStatus.OTHER_CARD) and r["method"] == method
        )

    def total(*statuses: RefundStatus) -> int:
        return sum(int(r["amount_minor"]) for r in refunds if r["status"] in statuses)

    corrected = d.get("corrected_minor")
    left = d["captured_minor"] - total(RefundStatus.DONE, RefundStatus.SENT, RefundStatus.UNKNOWN)

    captured_at = d.get("captured_at")
    holds = [h for h in d.get("holds", ()) if h.get("captured_minor")]
    # every captured hold with its own time, or none (a row from before: the session's time)
    captures = (
        tuple((datetime.fromisoformat(h["captured_at"]), int(h["captured_minor"])) for h in holds)
        if all(h.get("captured_at") for h in holds)
        else ()
    )
    return SessionFacts(
        id=row["id"],
        terminal=d["terminal"],
        state=row["state"],
        currency=d["currency"],
        brand=brand_group(d.get("card") or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        captured_at=datetime.fromisoformat(captured_at) if captured_at else None,
        captured_minor=d["captured_minor"],
        bookings=sum(1 for h in d.get("holds", ()) if h.get("captured_minor")) or 1,
        price_minor=d["price_minor"],
        owed_minor=d.get("owed_minor", 0),
        shortfall_minor=d.get("shortfall_minor", 0),
        billed_energy_wh=d.get("billed_energy_wh", 0),
        reported_energy_wh=d.get("reported_energy_wh"),
        reference=d.get("reference"),
        reversed=done("reversal"),
        refunded=done("refund"),
        # sent and never answered: a restart between the terminal's answer and its storage
        # leaves a refund sent, and nobody asks about a final session's refund again
        refunds_unsettled=sum(
            1 for r in refunds if r["status"] in (RefundStatus.SENT, RefundStatus.UNKNOWN)
        ),
        refund_due_minor=max(0, left - corrected) if corrected is not None else 0,
        paid_elsewhere_minor=total(RefundStatus.OTHER_CARD),
        captures=captures,
    )
