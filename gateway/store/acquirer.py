"""The acquirer's book: modifications we sent (or will send) and the webhooks that settle them.

Why a table of its own and not the outbox: a modification is more than a message to deliver.
After delivery ("received") it stays open until its webhook settles it, with a deadline past
which it is a finding; the outbox forgets a message once it is delivered, and its one pump
hands every due message to the OCPI pusher. The ``queued`` rows here are the store-and-forward
queue (uplink down), drained in creation order, each sent until the acquirer takes it.

Webhooks are stored before they are acknowledged, deduplicated on Adyen's documented identity
(pspReference, eventCode, success, originalReference); a repeat is counted, never applied
twice. Webhooks may come before our own record of the acquirer's answer: an unmatched event is
kept and settles its modification when the answer is recorded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from drivers.money import Money
from gateway.acquirer.port import (
    FAILURE_EVENTS,
    SETTLED_BY,
    Modification,
    ModificationEvent,
    ModificationKind,
)
from gateway.store.db import from_text, sqlite_errors, to_text, transaction

QUEUE_BATCH = 50  # queued modifications taken per drain turn
_COLUMNS = (
    "command_key, acquirer, kind, payment_reference, merchant_reference, amount_minor,"
    " authorised_minor, currency, status, acquirer_reference, created_at, attempts, last_error,"
    " deadline, settled_at, outcome_reason"
)
_OPEN = ("queued", "received")


@dataclass(frozen=True, slots=True)
class StoredModification:
    modification: Modification
    acquirer: str
    status: str
    acquirer_reference: str | None
    created_at: datetime
    attempts: int
    last_error: str | None
    deadline: datetime | None
    settled_at: datetime | None
    outcome_reason: str | None


@dataclass(frozen=True, slots=True)
class Unclaimed:
    """A stored webhook saying money moved that no modification of ours took as its outcome."""

    acquirer: str
    event_code: str
    psp_reference: str
    original_reference: str | None
    amount_minor: int | None
    currency: str | None
    received_at: datetime


CLAIMABLE = ("CAPTURE", "REFUND")  # success events that mean money moved


class AcquirerBook:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._path = path

    # ---- modifications ----------------------------------------------------------------------

    def enqueue(self, acquirer: str, modification: Modification, now: datetime) -> bool:
        """Record a decided modification (``queued``). False if its key was recorded before:
        the same command is never a second modification."""
        m = modification
        amount, authorised = m.amount, m.authorised
        priced = amount or authorised
        currency = priced.currency if priced is not None else None
        with transaction(self._conn, self._path):
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO acquirer_modifications (command_key, acquirer, kind,"
                " payment_reference, merchant_reference, amount_minor, authorised_minor, currency,"
                " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                (
                    m.command_key,
                    acquirer,
                    m.kind,
                    m.payment_reference,
                    m.merchant_reference,
                    amount.minor if amount else None,
                    authorised.minor if authorised else None,
                    currency,
                    to_text(now),
                ),
            )
        return cur.rowcount == 1

    def queued(self, acquirer: str, limit: int = QUEUE_BATCH) -> list[StoredModification]:
        return self._select(
            "WHERE acquirer = ? AND status = 'queued' ORDER BY created_at, rowid LIMIT ?",
            (acquirer, limit),
        )

    def get(self, command_key: str) -> StoredModification | None:
        found = self._select("WHERE command_key = ?", (command_key,))
        return found[0] if found else None

    def waiting(self) -> list[StoredModification]:
        """Every modification without an outcome yet: queued or awaiting its webhook."""
        return self._select("WHERE status IN ('queued', 'received') ORDER BY created_at", ())

    def settled_since(
        self, since: datetime, limit: int = 10 * QUEUE_BATCH
    ) -> list[StoredModification]:
        """Modifications given an outcome (a webhook, or the acquirer's refusal) at or after
        ``since``, oldest first: what the acquirer runner hands the engine."""
        return self._select(
            "WHERE status IN ('confirmed', 'failed', 'rejected') AND settled_at >= ?"
            " ORDER BY settled_at, rowid LIMIT ?",
            (to_text(since), limit),
        )

    def touched(self, payment_reference: str) -> bool:
        """Has any modification of ours, or any webhook, named this payment? Then it is not an
        orphan: someone captured, cancelled or adjusted it (the sweep of an online terminal)."""
        with sqlite_errors(self._path):
            row = self._conn.execute(
                "SELECT 1 FROM acquirer_modifications WHERE payment_reference = ? UNION ALL"
                " SELECT 1 FROM acquirer_notifications WHERE original_reference = ? LIMIT 1",
                (payment_reference, payment_reference),
            ).fetchone()
        return row is not None

    def overdue(self, now: datetime) -> list[StoredModification]:
        """Taken by the acquirer, no webhook by the deadline: a finding for reconciliation,
        never a success."""
        return self._select(
            "WHERE status = 'received' AND deadline <= ? ORDER BY deadline", (to_text(now),)
        )

    def received(
        self, command_key: str, acquirer_reference: str, now: datetime, deadline: datetime
    ) -> None:
        """The acquirer took it. If its webhook came first (kept unmatched), it settles now."""
        with transaction(self._conn, self._path):
            self._conn.execute(
                "UPDATE acquirer_modifications SET status = CASE status WHEN 'queued' THEN"
                " 'received' ELSE status END, acquirer_reference = coalesce(acquirer_reference, ?),"
                " attempts = attempts + 1, last_error = NULL, deadline = ?"
                " WHERE command_key = ? AND status IN ('queued', 'confirmed', 'failed')",
                (acquirer_reference, to_text(deadline), command_key),
            )
            found = self._conn.execute(
                "SELECT kind FROM acquirer_modifications WHERE command_key = ?", (command_key,)
            ).fetchone()
            rows = self._conn.execute(
                "SELECT id, event_code, success, reason, dedupe_key, amount_minor, currency"
                " FROM acquirer_notifications WHERE psp_reference = ? AND command_key IS NULL"
                " ORDER BY id",
                (acquirer_reference,),
            ).fetchall()
            codes = SETTLED_BY[_kind(str(found[0]))] if found else frozenset()
            for id_, code, success, reason, key, minor, currency in rows:
                fits = self._fits(command_key, code, bool(success), minor, currency)
                if (
                    code in codes
                    and fits
                    and self._settle(command_key, code, bool(success), reason, key, now)
                ):
                    self._conn.execute(
                        "UPDATE acquirer_notifications SET command_key = ? WHERE id = ?",
                        (command_key, id_),
                    )

    def attempt_failed(self, command_key: str, error: str) -> None:
        """Not taken (uplink down, 5xx): it stays queued, the error visible."""
        with sqlite_errors(self._path):
            self._conn.execute(
                "UPDATE acquirer_modifications SET attempts = attempts + 1, last_error = ?"
                " WHERE command_key = ? AND status = 'queued'",
                (error[:500], command_key),
            )

    def rejected(self, command_key: str, reason: str, now: datetime) -> None:
        """The acquirer refused it: final, and a finding (the amount was not modified)."""
        with sqlite_errors(self._path):
            self._conn.execute(
                "UPDATE acquirer_modifications SET status = 'rejected', attempts = attempts + 1,"
                " last_error = ?, outcome_reason = ?, settled_at = ?"
                " WHERE command_key = ? AND status = 'queued'",
                (reason[:500], reason[:500], to_text(now), command_key),
            )

    # ---- webhooks ---------------------------------------------------------------------------

    def record_events(
        self, acquirer: str, events: Sequence[ModificationEvent], now: datetime
    ) -> int:
        """Store one notification request's events in one transaction (before ``[accepted]``)
        and settle what they settle. Returns how many were new (repeats are counted only)."""
        new = 0
        with transaction(self._conn, self._path):
            for e in events:
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO acquirer_notifications (acquirer, dedupe_key,"
                    " event_code, psp_reference, original_reference, merchant_reference, success,"
                    " amount_minor, currency, reason, event_date, received_at) VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        acquirer,
                        e.dedupe_key,
                        e.event,
                        e.psp_reference,
                        e.original_reference,
                        e.merchant_reference,
                        int(e.success),
                        e.amount.minor if e.amount else None,
                        e.amount.currency if e.amount else None,
                        e.reason,
                        e.event_date,
                        to_text(now),
                    ),
                )
                if cur.rowcount != 1:
                    self._conn.execute(
                        "UPDATE acquirer_notifications SET repeats = repeats + 1"
                        " WHERE acquirer = ? AND dedupe_key = ?",
                        (acquirer, e.dedupe_key),
                    )
                    continue
                new += 1
                key = self._match(acquirer, e)
                minor, currency = (e.amount.minor, e.amount.currency) if e.amount else (None, None)
                if (
                    key
                    and self._fits(key, e.event, e.success, minor, currency)
                    and self._settle(key, e.event, e.success, e.reason, e.dedupe_key, now)
                ):
                    self._conn.execute(
                        "UPDATE acquirer_notifications SET command_key = ? WHERE acquirer = ?"
                        " AND dedupe_key = ?",
                        (key, acquirer, e.dedupe_key),
                    )
        return new

    def _match(self, acquirer: str, e: ModificationEvent) -> str | None:
        """The modification an event is about: by the modification's reference, else by our
        reference (sent as the command key), else the one open modification of its kind on
        that payment. None: unmatched (kept; a later answer may claim it)."""
        kinds = [k for k, codes in SETTLED_BY.items() if e.event in codes]
        marks = ",".join("?" * len(kinds))
        payment = e.original_reference
        for where, args in (
            ("acquirer_reference = ?", (e.psp_reference,)),
            (
                "command_key = ? AND coalesce(payment_reference = ?, 1)",
                (e.merchant_reference, payment),
            ),
        ):
            row = self._conn.execute(
                f"SELECT command_key FROM acquirer_modifications WHERE acquirer = ? AND {where}"
                f" AND kind IN ({marks})",
                (acquirer, *args, *kinds),
            ).fetchone()
            if row:
                return str(row[0])
        if payment is None or e.merchant_reference:  # another's reference: not one of ours
            return None
        rows = self._conn.execute(
            "SELECT command_key FROM acquirer_modifications WHERE acquirer = ? AND"
            f" payment_reference = ? AND kind IN ({marks}) AND status IN ('queued', 'received')"
            " AND acquirer_reference IS NULL",
            (acquirer, payment, *kinds),
        ).fetchall()
        return str(rows[0][0]) if len(rows) == 1 else None

    def _fits(
        self, command_key: str, code: str, success: bool, minor: int | None, currency: str | None
    ) -> bool:
        """A success is evidence only of the amount we asked: one for another amount or
        currency (or none) settles nothing; it is kept unmatched and the modification runs
        into its deadline, a finding. A failure report settles whatever it names."""
        if code in FAILURE_EVENTS or not success:
            return True
        row = self._conn.execute(
            "SELECT amount_minor, currency FROM acquirer_modifications WHERE command_key = ?",
            (command_key,),
        ).fetchone()
        return row is None or row[0] is None or (row[0], row[1]) == (minor, currency)

    def _settle(
        self, command_key: str, code: str, success: bool, reason: str, key: str, now: datetime
    ) -> bool:
        """An open modification takes the event's outcome. A failure report also overturns a
        success reported before (Adyen may send CAPTURE_FAILED after CAPTURE)."""
        failed = code in FAILURE_EVENTS or not success
        status = "failed" if failed else "confirmed"
        allowed = ("queued", "received", "confirmed") if failed else _OPEN
        marks = ",".join("?" * len(allowed))
        cur = self._conn.execute(
            "UPDATE acquirer_modifications SET status = ?, settled_at = ?, settled_by = ?,"
            f" outcome_reason = ? WHERE command_key = ? AND status IN ({marks})",
            (status, to_text(now), key, reason or None, command_key, *allowed),
        )
        return cur.rowcount == 1

    def unclaimed(self, since: datetime, until: datetime, limit: int = 1000) -> list[Unclaimed]:
        """Successful CAPTURE/REFUND webhooks received in [since, until) that settled nothing
        of ours: made elsewhere (the back office), for another amount than we asked, or after
        their modification failed. Reconciliation lists them; nobody else would."""
        marks = ",".join("?" * len(CLAIMABLE))
        with sqlite_errors(self._path):
            rows = self._conn.execute(
                "SELECT acquirer, event_code, psp_reference, original_reference, amount_minor,"
                " currency, received_at FROM acquirer_notifications WHERE command_key IS NULL"
                f" AND success = 1 AND event_code IN ({marks}) AND received_at >= ?"
                " AND received_at < ? ORDER BY id LIMIT ?",
                (*CLAIMABLE, to_text(since), to_text(until), limit),
            ).fetchall()
        return [
            Unclaimed(
                str(a),
                str(code),
                str(psp),
                None if original is None else str(original),
                None if minor is None else int(str(minor)),
                None if currency is None else str(currency),
                from_text(str(at)),
            )
            for a, code, psp, original, minor, currency, at in rows
        ]

    def notifications(self, acquirer: str, limit: int = 1000) -> list[dict[str, object]]:
        with sqlite_errors(self._path):
            rows = self._conn.execute(
                "SELECT dedupe_key, event_code, psp_reference, original_reference, success,"
                " amount_minor, currency, repeats, command_key FROM acquirer_notifications"
                " WHERE acquirer = ? ORDER BY id LIMIT ?",
                (acquirer, limit),
            ).fetchall()
        names = (
            "dedupe_key",
            "event_code",
            "psp_reference",
            "original_reference",
            "success",
            "amount_minor",
            "currency",
            "repeats",
            "command_key",
        )
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _select(self, where: str, args: tuple[object, ...]) -> list[StoredModification]:
        with sqlite_errors(self._path):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM acquirer_modifications {where}", args
            ).fetchall()
        return [_row(r) for r in rows]


def _row(r: tuple[object, ...]) -> StoredModification:
    (key, acquirer, kind, payment, merchant, amount, authorised, currency, status) = r[:9]
    (reference, created, attempts, error, deadline, settled, reason) = r[9:]
    cur = str(currency) if currency is not None else ""
    modification = Modification(
        command_key=str(key),
        kind=_kind(str(kind)),
        payment_reference=None if payment is None else str(payment),
        merchant_reference=None if merchant is None else str(merchant),
        amount=None if amount is None else Money(int(str(amount)), cur),
        authorised=None if authorised is None else Money(int(str(authorised)), cur),
    )
    return StoredModification(
        modification=modification,
        acquirer=str(acquirer),
        status=str(status),
        acquirer_reference=None if reference is None else str(reference),
        created_at=from_text(str(created)),
        attempts=int(str(attempts)),
        last_error=None if error is None else str(error),
        deadline=None if deadline is None else from_text(str(deadline)),
        settled_at=None if settled is None else from_text(str(settled)),
        outcome_reason=None if reason is None else str(reason),
    )


def _kind(text: str) -> ModificationKind:
    for kind in SETTLED_BY:
        if kind == text:
            return kind
    raise ValueError(f"unknown modification kind {text!r} in the store")
