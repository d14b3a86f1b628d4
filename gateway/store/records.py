"""What a step writes: plain frozen dataclasses, no SQL.

A ``Step`` is the unit of durability: everything in it is written in one SQLite transaction
or nothing is. The engine builds steps; only ``gateway.store`` turns them into SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Json = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EndOfDayRecord:
    terminal: str
    at: datetime
    currency: str
    total_minor: int | None
    batch_range: tuple[str, str] | None  # first and last receipt, where the protocol has one
    totals: Sequence[Json]  # [{"brand", "currency", "count", "amount_minor"}]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    state: str
    data: Json
    final: bool = False
    owed_minor: int = 0
    terminal: str | None = None
    # Every meter reading of the session so far, (at, energy_wh, trusted) in order: the store
    # appends those it does not hold yet (one row each; a stored reading is never rewritten).
    readings: Sequence[tuple[str, int, bool]] = ()


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    id: str
    session_id: str
    kind: str
    state: str
    amount_minor: int
    currency: str
    data: Json = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    id: str
    device: str
    protocol: str
    state: str
    data: Json = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    entity: str  # "session", "payment", "terminal", "outbox", ...
    entity_id: str
    kind: str  # what happened, e.g. "preauth.approved"
    data: Json = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiOrigin:
    """Who asked for a session over the local API: the client id, and the SHA-256 of its
    Idempotency-Key (None without one) and of its request."""

    client: str
    key_sha256: str | None
    request_sha256: str

    def journal(self) -> dict[str, Any]:
        return {"client": self.client, "request_sha256": self.request_sha256}


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    message_id: str  # unique: enqueueing the same id twice is refused by the schema
    object_key: str  # ordering key, e.g. "fac:<authorization_reference>"
    kind: str
    payload: Json


@dataclass(frozen=True, slots=True)
class InboxMessage:
    message_id: str
    source: str
    kind: str
    payload: Json


@dataclass(frozen=True, slots=True)
class Step:
    key: str  # idempotency key: a step whose key was applied before is skipped whole
    sessions: Sequence[SessionRecord] = ()
    payments: Sequence[PaymentRecord] = ()
    terminals: Sequence[TerminalRecord] = ()
    journal: Sequence[JournalEntry] = ()
    outbox: Sequence[OutboxMessage] = ()
    inbox: Sequence[InboxMessage] = ()
    inbox_processed: Sequence[str] = ()  # message ids handled by this step
    end_of_day: Sequence[EndOfDayRecord] = ()


@dataclass(frozen=True, slots=True)
class StoredOutbox:
    id: int
    message_id: str
    object_key: str
    kind: str
    payload: Json
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    dead: int
    oldest_pending: datetime | None
