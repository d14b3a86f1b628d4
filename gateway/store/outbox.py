"""The one outbox: upstream messages written in the step that decided them, sent later.

Delivery is at-least-once and ordered per ``object_key``: only the oldest pending message
of an object is ever due, so a later PATCH can never overtake its POST. A message that can
never succeed is dead-lettered with its reason and stops blocking its object.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.store.db import from_text, sqlite_errors, to_text, transaction
from gateway.store.records import Backlog, StoredOutbox

_COLUMNS = (
    "id, message_id, object_key, kind, payload, created_at, status, attempts, "
    "next_attempt_at, last_error"
)


class Outbox:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._path = path

    def due(self, now: datetime, limit: int = 100) -> list[StoredOutbox]:
        """The head message of each object whose retry time has come, oldest first (what
        ``take`` takes, without taking it)."""
        with sqlite_errors(self._path):
            return self._due(now, limit, ())

    def _due(self, now: datetime, limit: int, skip: Collection[str]) -> list[StoredOutbox]:
        """Objects in ``skip`` (their head is being delivered) are left out."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM outbox o WHERE status = 'pending' AND next_attempt_at <= ?"
            " AND id = (SELECT min(id) FROM outbox p WHERE p.object_key = o.object_key"
            " AND p.status = 'pending') ORDER BY id LIMIT ?",
            (to_text(now), limit + len(skip)),
        ).fetchall()
        return [_row(r) for r in rows if r[2] not in skip][:limit]

    def take(
        self, marks: Sequence[Mark], now: datetime, limit: int, skip: Collection[str], sending: str
    ) -> list[StoredOutbox]:
        """One transaction for a delivery pump's turn: record what became of the deliveries
        that finished (``marks``), then take up to ``limit`` due messages and mark them
        ``sending`` (kept as their error until their own mark replaces it), so that they are
        known to be under way before any of them leaves."""
        with transaction(self._conn, self._path):
            self._mark(marks)
            taken = self._due(now, limit, skip) if limit > 0 else []
            self._mark([Mark(message.message_id, "retry", now, sending) for message in taken])
        return taken

    def get(self, message_id: str) -> StoredOutbox | None:
        with sqlite_errors(self._path):
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE message_id = ?", (message_id,)
            ).fetchone()
        return _row(row) if row else None

    def list(
        self, status: str | None = None, limit: int = 100, kind: str | None = None
    ) -> list[StoredOutbox]:
        clauses = [c for c, v in (("status = ?", status), ("kind = ?", kind)) if v]
        args = tuple(v for v in (status, kind) if v)
        query = f"SELECT {_COLUMNS} FROM outbox" + (
            f" WHERE {' AND '.join(clauses)}" if clauses else ""
        )
        if kind and limit == 100:
            limit = 1_000_000  # a kind's whole history (the FAC list is built from it)
        with sqlite_errors(self._path):
            rows = self._conn.execute(query + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def delivered(self, message_id: str, now: datetime) -> None:
        self.record([Mark(message_id, "done", now)])

    def retry_later(self, message_id: str, error: str, at: datetime) -> None:
        self.record([Mark(message_id, "retry", at, error)])

    def dead_letter(self, message_id: str, reason: str, now: datetime) -> None:
        self.record([Mark(message_id, "dead", now, reason)])

    def record(self, marks: Sequence[Mark]) -> None:
        """Apply what happened to many messages in one transaction: one fsync for a batch of
        deliveries instead of one each. A mark only changes a message still pending."""
        if not marks:
            return
        with transaction(self._conn, self._path):
            self._mark(marks)

    def _mark(self, marks: Sequence[Mark]) -> None:
        for mark in marks:
            self._conn.execute(_MARKS[mark.status], _mark_args(mark))

    def requeue(self, message_id: str, now: datetime) -> bool:
        """A technician's retry: a dead or waiting message becomes due now. False if not found."""
        with sqlite_errors(self._path):
            cur = self._conn.execute(
                "UPDATE outbox SET status = 'pending', next_attempt_at = ?, done_at = NULL"
                " WHERE message_id = ? AND status IN ('pending', 'dead')",
                (to_text(now), message_id),
            )
        return cur.rowcount == 1

    def backlog(self) -> Backlog:
        with sqlite_errors(self._path):
            pending, oldest = self._conn.execute(
                "SELECT count(*), min(created_at) FROM outbox WHERE status = 'pending'"
            ).fetchone()
            dead = self._conn.execute(
                "SELECT count(*) FROM outbox WHERE status = 'dead'"
            ).fetchone()[0]
        return Backlog(int(pending), int(dead), from_text(oldest) if oldest else None)


@dataclass(frozen=True, slots=True)
class Mark:
    """What became of one delivery attempt: ``done``, ``retry`` at ``at`` (with the error that
    made it wait), or ``dead`` (with the reason)."""

    message_id: str
    status: Literal["done", "retry", "dead"]
    at: datetime
    error: str | None = None


_MARKS = {
    "done": "UPDATE outbox SET status = 'done', done_at = ?, attempts = attempts + 1, last_error "
    "= NULL"
    " WHERE message_id = ? AND status = 'pending'",
    "retry": "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
    " WHERE message_id = ? AND status = 'pending'",
    "dead": "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = ?, done_at "
    "= ?"
    " WHERE message_id = ? AND status = 'pending'",
}


def _mark_args(mark: Mark) -> tuple[object, ...]:
    if mark.status == "done":
        return (to_text(mark.at), mark.message_id)
    return ((mark.error or "")[:500], to_text(mark.at), mark.message_id)


def _row(row: tuple[object, ...]) -> StoredOutbox:
    (id_, message_id, object_key, kind, payload, created, status, attempts, next_at, error) = row
    return StoredOutbox(
        id=int(str(id_)),
        message_id=str(message_id),
        object_key=str(object_key),
        kind=str(kind),
        payload=json.loads(str(payload)),
        created_at=from_text(str(created)),
        status=str(status),
        attempts=int(str(attempts)),
        next_attempt_at=from_text(str(next_at)),
        last_error=None if error is None else str(error),
    )
