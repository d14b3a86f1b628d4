"""Durable store: the only package that touches SQLite."""

from gateway.store.outbox import Mark
from gateway.store.records import (
    ApiOrigin,
    Backlog,
    EndOfDayRecord,
    InboxMessage,
    JournalEntry,
    OutboxMessage,
    PaymentRecord,
    SessionRecord,
    Step,
    StoredOutbox,
    TerminalRecord,
)
from gateway.store.store import Store

__all__ = [
    "ApiOrigin",
    "Backlog",
    "EndOfDayRecord",
    "InboxMessage",
    "JournalEntry",
    "Mark",
    "OutboxMessage",
    "PaymentRecord",
    "SessionRecord",
    "Step",
    "Store",
    "StoredOutbox",
    "TerminalRecord",
]
