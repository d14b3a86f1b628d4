"""What the store answers: sessions, payments, journal rows, terminals, end-of-day batches,
inbox messages, the API's idempotency records, and the money figures and statistics; each a
read on the store's connection, never a write."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from gateway.store.db import from_text, sqlite_errors, to_text

# Is a step key applied? Its journal entries say so (legacy_steps: keys of the steps that wrote
# no journal entry before migration 0008).
_APPLIED = (
    "SELECT 1 FROM journal WHERE step_key = ? UNION ALL SELECT 1 FROM legacy_steps WHERE "
    "key = ? LIMIT 1"
)


class StoreReads:
    """The reads of ``Store`` (which sets these)."""

    _conn: sqlite3.Connection
    path: Path
    _clock: Callable[[], datetime]
    # The most hold references of owing sessions one terminal's sweep reads (``owing_hold_refs``):
    # far above what a terminal holds at once (its holds lapse within days).
    owing_refs_limit: ClassVar[int] = 100_000

    def api_request(self, client: str, key_sha256: str) -> tuple[str, str] | None:
        """(session id, request SHA-256) of the session ``client`` started with this key."""
        rows = self._query(
            "SELECT id, api_request FROM sessions WHERE api_client = ? AND api_key = ?",
            (client, key_sha256),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def session_origin(self, session_id: str) -> str | None:
        """The API client that started the session ('' for an API without tokens); None when
        it did not start from the API (a plug-in, a card, or before migration 0011)."""
        rows = self._query("SELECT api_client FROM sessions WHERE id = ?", (session_id,))
        return rows[0][0] if rows else None

    def session(self, session_id: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT id, state, final, data, created_at, updated_at FROM sessions WHERE id = ?",
            (session_id,),
        )
        return self._sessions(rows)[0] if rows else None

    def sessions(
        self, *, open_only: bool = False, owing: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first; ``open_only``: not final; ``owing``: sessions that owe money (any
        state)."""
        clauses = [c for c, on in (("final = 0", open_only), ("owed_minor > 0", owing)) if on]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            "SELECT id, state, final, data, created_at, updated_at FROM sessions"
            f"{where} ORDER BY created_at DESC LIMIT ?",
            (limit,),
        )
        return self._sessions(rows)

    def owing_hold_refs(self, terminal: str, now: datetime) -> list[str]:
        """References of every hold of the sessions on ``terminal`` that owe money and whose
        hold is still valid at ``now`` (its capture may yet be proven: the sweep must never
        release a hold that secures a debt), newest session first, at most ``owing_refs_limit``
        (past it the oldest are left out: the caller says so). Read in SQL, through the owing index,
        without loading a session."""
        owing = (
            "s.owed_minor > 0 AND coalesce(s.terminal, json_extract(s.data, '$.terminal')) = ?"
            " AND julianday(json_extract(s.data, '$.expires_at')) > julianday(?)"
        )
        rows = self._query(
            "SELECT ref FROM ("
            " SELECT json_extract(h.value, '$.ref') AS ref, s.created_at AS at"
            f" FROM sessions s, json_each(s.data, '$.holds') h WHERE {owing}"
            # a row from before holds were a list names its one hold at the top level
            f" UNION ALL SELECT json_extract(s.data, '$.ref'), s.created_at FROM sessions s"
            f" WHERE {owing}"
            ") WHERE ref IS NOT NULL GROUP BY ref ORDER BY max(at) DESC LIMIT ?",
            (terminal, to_text(now), terminal, to_text(now), self.owing_refs_limit),
        )
        return [str(ref) for (ref,) in rows]

    def sessions_refund_sent(self, limit: int) -> list[dict[str, Any]]:
        """Final sessions with a refund still ``sent`` (its answer never stored), oldest first,
        at most ``limit``: after a start each is asked about (``payments.refund_resume``)."""
        rows = self._query(
            "SELECT id, state, final, data, created_at, updated_at FROM sessions s"
            " WHERE final = 1 AND EXISTS (SELECT 1 FROM json_each(s.data, '$.refunds') r"
            " WHERE json_extract(r.value, '$.status') = 'sent') ORDER BY created_at LIMIT ?",
            (limit,),
        )
        return self._sessions(rows)

    def sessions_of_terminal(self, terminal: str, since: datetime) -> list[dict[str, Any]]:
        """Sessions on one terminal changed since ``since`` (whose receipts the terminal may
        repeat)."""
        rows = self._query(
            "SELECT id, state, final, data, created_at, updated_at FROM sessions"
            " WHERE terminal = ? AND updated_at >= ?",
            (terminal, to_text(since)),
        )
        return self._sessions(rows)

    def count_open_sessions(self) -> int:
        return int(self._query("SELECT count(*) FROM sessions WHERE final = 0", ())[0][0])

    def payments(self, session_id: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT id, kind, state, amount_minor, currency, data, updated_at FROM payments"
            " WHERE session_id = ? ORDER BY created_at, id",
            (session_id,),
        )
        keys = ("id", "kind", "state", "amount_minor", "currency", "data", "updated_at")
        return [dict(zip(keys, (*r[:5], json.loads(r[5]), r[6]), strict=True)) for r in rows]

    def journal(self, entity_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, args = ("WHERE entity_id = ?", (entity_id,)) if entity_id else ("", ())
        rows = self._query(
            f"SELECT seq, at, entity, entity_id, kind, data FROM journal {where} ORDER BY seq "
            f"LIMIT ?",
            (*args, limit),
        )
        keys = ("seq", "at", "entity", "entity_id", "kind", "data")
        return [dict(zip(keys, (*r[:5], json.loads(r[5])), strict=True)) for r in rows]

    def terminals(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT id, device, protocol, state, data, updated_at FROM terminals ORDER BY id", ()
        )
        keys = ("id", "device", "protocol", "state", "data", "updated_at")
        return [dict(zip(keys, (*r[:4], json.loads(r[4]), r[5]), strict=True)) for r in rows]

    def last_end_of_day(self, terminal: str) -> datetime | None:
        rows = self._query(
            "SELECT at FROM end_of_day WHERE terminal = ? ORDER BY at DESC LIMIT 1", (terminal,)
        )
        return from_text(rows[0][0]) if rows else None

    def end_of_day_batches(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Batches closed in [start, end), oldest first."""
        rows = self._query(
            "SELECT terminal, period_start, at, currency, total_minor, batch_first, "
            "batch_last, totals"
            " FROM end_of_day WHERE at >= ? AND at < ? ORDER BY at",
            (to_text(start), to_text(end)),
        )
        return [
            {
                "terminal": t,
                "period_start": from_text(ps) if ps else None,
                "at": from_text(at),
                "currency": cur,
                "total_minor": total,
                "batch_range": (first, last) if first is not None else None,
                "totals": json.loads(totals),
            }
            for t, ps, at, cur, total, first, last, totals in rows
        ]

    def sessions_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Sessions created in [start, end) or changed since ``start`` (a late capture, a
        refund)."""
        rows = self._query(
            "SELECT id, state, final, data, created_at, updated_at FROM sessions"
            " WHERE (created_at >= ? AND created_at < ?) OR updated_at >= ? ORDER BY created_at",
            (to_text(start), to_text(end), to_text(start)),
        )
        return self._sessions(rows)

    def inbox_pending(self, kind: str, limit: int = 100) -> list[dict[str, Any]]:
        """Stored requests of one kind not yet carried out, oldest first."""
        rows = self._query(
            "SELECT message_id, payload, received_at FROM inbox WHERE kind = ? AND processed_at "
            "IS NULL"
            " ORDER BY id LIMIT ?",
            (kind, limit),
        )
        return [
            {"message_id": m, "payload": json.loads(p), "received_at": from_text(at)}
            for m, p, at in rows
        ]

    def step_applied(self, key: str) -> bool:
        return bool(self._query(_APPLIED, (key, key)))

    def inbox(self, kind: str, limit: int = 10_000) -> list[dict[str, Any]]:
        """Stored messages from the CPO of one kind, newest first."""
        rows = self._query(
            "SELECT message_id, payload, received_at FROM inbox WHERE kind = ? ORDER BY id DESC "
            "LIMIT ?",
            (kind, limit),
        )
        return [
            {"message_id": m, "payload": json.loads(p), "received_at": from_text(at)}
            for m, p, at in rows
        ]

    def first_inbox(self, kind: str, field: str, value: str) -> dict[str, Any] | None:
        """The oldest stored message of one kind whose payload has ``field`` = ``value`` (the
        first CDR of a session, however many came after it)."""
        if not field.isidentifier():
            raise ValueError(f"not a payload field name: {field!r}")
        rows = self._query(
            "SELECT message_id, payload, received_at FROM inbox WHERE kind = ? AND "
            f"json_extract(payload, '$.{field}') = ? ORDER BY id LIMIT 1",
            (kind, value),
        )
        for m, p, at in rows:
            return {"message_id": m, "payload": json.loads(p), "received_at": from_text(at)}
        return None

    def first_ids(self, kind: str, field: str) -> dict[str, str]:
        """For each value of a payload ``field``, the payload ``id`` of the oldest stored
        message of that kind with it (each session's first CDR), in one pass."""
        if not field.isidentifier():
            raise ValueError(f"not a payload field name: {field!r}")
        rows = self._query(
            f"SELECT json_extract(payload, '$.{field}'), json_extract(payload, '$.id'), MIN(id) "
            "FROM inbox WHERE kind = ? GROUP BY 1",
            (kind,),
        )
        return {str(v): str(i) for v, i, _ in rows if v is not None and i is not None}

    def journal_of(self, entity: str) -> list[dict[str, Any]]:
        """Every journal entry about one kind of entity (e.g. reconciliation resolutions), oldest
        first."""
        rows = self._query(
            "SELECT seq, at, entity_id, kind, data FROM journal WHERE entity = ? ORDER BY seq",
            (entity,),
        )
        return [
            {"seq": seq, "at": at, "entity_id": eid, "kind": kind, "data": json.loads(data)}
            for seq, at, eid, kind, data in rows
        ]

    def money_figures(self) -> dict[str, Any]:
        """Totals for the metrics page: final sessions by state, minor units by payment kind and
        currency, amounts owed by currency, open sessions holding money and the oldest of them."""
        final = dict(
            self._query("SELECT state, count(*) FROM sessions WHERE final = 1 GROUP BY state", ())
        )
        money = {
            (kind, cur): int(total)
            for kind, cur, total in self._query(
                "SELECT kind, currency, sum(amount_minor) FROM payments WHERE state IN "
                "('approved', 'done')"
                " GROUP BY kind, currency",
                (),
            )
        }
        owed = dict(
            self._query(
                "SELECT json_extract(data, '$.currency'), sum(owed_minor) FROM sessions WHERE "
                "owed_minor > 0"
                " GROUP BY 1",
                (),
            )
        )
        holding = self._query(
            "SELECT count(*), min(created_at) FROM sessions WHERE final = 0"
            " AND json_extract(data, '$.open_minor') > 0",
            (),
        )
        count, oldest = holding[0]
        return {
            "final": final,
            "money": money,
            "owed": owed,
            "holds_open": int(count),
            "holds_oldest": from_text(oldest) if oldest else None,
        }

    def stats(self) -> dict[str, Any]:
        """What the file holds: its size, the space free inside it, rows per table, and the
        oldest journal row and session still kept (``evpay store stats``)."""
        page_size, pages, free = (
            int(self._query(f"PRAGMA {p}", ())[0][0])
            for p in ("page_size", "page_count", "freelist_count")
        )
        wal = Path(f"{self.path}-wal")
        tables = (
            "sessions",
            "payments",
            "journal",
            "journal_checkpoints",
            "meter_readings",
            "outbox",
            "inbox",
            "terminals",
            "end_of_day",
        )
        rows = {t: int(self._query(f"SELECT count(*) FROM {t}", ())[0][0]) for t in tables}
        sessions = self._query("SELECT count(*), sum(final), min(created_at) FROM sessions", ())[0]
        journal = self._query("SELECT min(seq), min(at) FROM journal", ())[0]
        return {
            "path": str(self.path),
            "file_bytes": page_size * pages,
            "free_bytes": page_size * free,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "rows": rows,
            "final_sessions": int(sessions[1] or 0),
            "oldest_session": sessions[2],
            "oldest_journal_seq": journal[0],
            "oldest_journal_at": journal[1],
        }

    def _sessions(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Session rows as dicts, each with its meter readings under ``data["readings"]`` (from
        their table; a row written before migration 0010 carries them inline)."""
        out = [_session_dict(r) for r in rows]
        found: dict[str, list[list[Any]]] = {}
        for session_id, at, energy_wh, trusted in self._query(
            "SELECT session_id, at, energy_wh, trusted FROM meter_readings"
            " WHERE session_id IN (SELECT value FROM json_each(?)) ORDER BY session_id, seq",
            (json.dumps([r["id"] for r in out]),),
        ):
            found.setdefault(session_id, []).append([at, energy_wh, bool(trusted)])
        for r in out:
            if r["id"] in found:
                r["data"]["readings"] = found[r["id"]]
        return out

    def _query(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with sqlite_errors(str(self.path)):
            return self._conn.execute(sql, args).fetchall()


def _session_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    id_, state, final, data, created, updated = row
    return {
        "id": id_,
        "state": state,
        "final": bool(final),
        "data": json.loads(data),
        "created_at": from_text(created),
        "updated_at": from_text(updated),
    }
