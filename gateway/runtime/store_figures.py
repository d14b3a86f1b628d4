"""What the metrics page reads from the store, and how: off the event loop.

The money figures are aggregate queries over every session and payment row; run on the loop
they would hold up every terminal result and charger message for as long as they take. So a
scrape reads them in a worker thread (``asyncio.to_thread``) on a read-only connection of its
own — the way the store's quick_check after READY already reads (``db.quick_check_path``):
WAL lets the daemon's one writer go on meanwhile. Only the finished figures come back to the
loop, where they are set on the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.runtime.metrics import Metrics
from gateway.store import Backlog, Store


@dataclass(frozen=True, slots=True)
class StoreFigures:
    backlog: Backlog
    open_sessions: int
    money: dict[str, Any]  # Store.money_figures()


def read_figures(path: Path, busy_timeout_ms: int = 5000) -> StoreFigures:
    """The store's figures for one scrape. Blocking: call it in a worker thread."""
    store = Store.open(path, read_only=True, busy_timeout_ms=busy_timeout_ms)
    try:
        return StoreFigures(
            store.outbox.backlog(), store.count_open_sessions(), store.money_figures()
        )
    finally:
        store.close()


def reader(path: Path, busy_timeout_ms: int = 5000) -> Callable[[], Callable[[Metrics], None]]:
    """A ``Metrics`` reader: reads in the thread, returns what sets the figures on the loop."""

    def read() -> Callable[[Metrics], None]:
        figures = read_figures(path, busy_timeout_ms)
        return lambda metrics: collect(metrics, figures, datetime.now(UTC))

    return read


def collect(metrics: Metrics, figures: StoreFigures, now: datetime) -> None:
    """Set the store's figures on the registry: computed from stored state at scrape time, they
    survive restarts and never drift."""
    backlog = figures.backlog
    metrics.describe("evpay_outbox_pending", "gauge", "upstream messages waiting to be sent")
    metrics.set("evpay_outbox_pending", float(backlog.pending))
    metrics.describe("evpay_outbox_dead", "gauge", "upstream messages dead-lettered")
    metrics.set("evpay_outbox_dead", float(backlog.dead))
    metrics.describe(
        "evpay_outbox_oldest_age_seconds", "gauge", "age of the oldest pending message"
    )
    oldest_message = backlog.oldest_pending
    age = (now - oldest_message).total_seconds() if oldest_message else 0.0
    metrics.set("evpay_outbox_oldest_age_seconds", age)
    metrics.describe("evpay_sessions_open", "gauge", "charging sessions not yet final")
    metrics.set("evpay_sessions_open", float(figures.open_sessions))
    f = figures.money
    metrics.describe("evpay_sessions_final_total", "counter", "sessions that ended, by final state")
    for state, n in f["final"].items():
        metrics.set("evpay_sessions_final_total", float(n), state=state)
    metrics.describe(
        "evpay_money_minor_total",
        "counter",
        "minor units held, captured, released and given back, by kind and currency",
    )
    for (kind, currency), amount in f["money"].items():
        metrics.set("evpay_money_minor_total", float(amount), kind=kind, currency=currency)
    metrics.describe(
        "evpay_owed_minor", "gauge", "amounts owed (unconfirmed, lapsed, shortfall), by currency"
    )
    for currency, amount in f["owed"].items():
        metrics.set("evpay_owed_minor", float(amount), currency=currency)
    metrics.describe("evpay_holds_open", "gauge", "open sessions that hold money at a terminal")
    metrics.set("evpay_holds_open", float(f["holds_open"]))
    metrics.describe(
        "evpay_hold_oldest_age_seconds", "gauge", "age of the oldest open session holding money"
    )
    oldest = f["holds_oldest"]
    metrics.set("evpay_hold_oldest_age_seconds", (now - oldest).total_seconds() if oldest else 0.0)
