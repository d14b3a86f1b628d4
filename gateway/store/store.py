"""The Store: one SQLite file, and one way to change it — ``apply(step)``.

A step's session/payment/terminal rows, journal entries, outbox and inbox messages are
written in a single ``BEGIN IMMEDIATE … COMMIT``. Nothing is sent to a terminal, charger
or CPO before the step that decided it has committed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import InvariantViolated, SchemaTooNew, StaleRead, StoreError, StoreGone
from gateway.store import export as _export
from gateway.store import journal as _journal
from gateway.store import retention as _retention
from gateway.store.acquirer import AcquirerBook
from gateway.store.audit import AuditReport, Checkpoint
from gateway.store.db import (
    connect,
    from_text,
    latest_version,
    migrate,
    schema_version,
    sqlite_errors,
    to_text,
    transaction,
)
from gateway.store.outbox import Outbox
from gateway.store.records import ApiOrigin, JournalEntry, Json, Step
from gateway.store.retention import Compact, Pruned


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Callable[[], datetime]) -> None:
        self._conn = conn
        self.path = path
        self._clock = clock
        self.outbox = Outbox(conn, str(path))
        self.acquirer = AcquirerBook(conn, str(path))
        self._identity = _identity(path)
        # What this connection last wrote, kept so a step need not read it back: the journal's
        # head hash and each open session's payment rows. Valid while no other connection has
        # committed (PRAGMA data_version unchanged, checked under the write lock); ``generation``
        # counts the times another writer was seen, for callers that cache on top of the store.
        self.generation = 0
        self._version = self._data_version()
        self._head: str | None = None
        self._payments: dict[str, dict[str, tuple[object, ...]]] = {}
        self._readings: dict[str, int] = {}  # meter readings stored, per open session
        self._origin: ApiOrigin | None = None

    def check_file(self) -> None:
        """StoreGone if the file at our path is no longer the one we hold open (deleted, or
        replaced): what we write would not be what the next start opens."""
        if _identity(self.path) != self._identity:
            raise StoreGone(str(self.path))

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        read_only: bool = False,
        busy_timeout_ms: int = 5000,
        clock: Callable[[], datetime] = _utcnow,
        check: bool = False,
        group: str | None = None,
    ) -> Store:
        """Open (and migrate, unless read-only) the database at ``path``; ``check``: run
        SQLite's quick_check first (see ``db.connect``)."""
        conn = connect(
            path, read_only=read_only, busy_timeout_ms=busy_timeout_ms, check=check, group=group
        )
        try:
            if read_only:
                found, known = schema_version(conn), latest_version()
                if found > known:
                    raise SchemaTooNew(str(path), found, known)
            else:
                migrate(conn, str(path))
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, clock)

    def close(self) -> None:
        with sqlite_errors(str(self.path)):
            self._conn.close()

    @property
    def schema_version(self) -> int:
        return schema_version(self._conn)

    def apply(self, step: Step, *, read_at: int | None = None) -> bool:
        """Write the whole step or nothing. False if a step with this key was applied before.

        ``read_at``: the ``generation`` at which the caller read what the step was computed
        from; if another writer has committed since, nothing is written and ``StaleRead`` says
        to read again."""
        texts: dict[int, str] = {}

        def text(
            data: Json,
        ) -> str:  # each record serialised once: for the card check and for the row
            key = id(data)
            if key not in texts:
                texts[key] = _journal.dumps(data)
            return texts[key]

        if not step.journal:  # every step is in the journal: its step_key is the idempotency key
            step = replace(step, journal=[JournalEntry("step", step.key, "step.applied", {})])
        self._refuse_card_data(step, text)
        where = str(self.path)
        at = to_text(self._clock())
        try:
            with transaction(self._conn, where):
                self._notice_other_writers()
                if read_at is not None and read_at != self.generation:
                    raise StaleRead(where)
                if self._conn.execute(_APPLIED, (step.key, step.key)).fetchone():
                    return False  # applied before: the (empty) transaction ends here
                head, payments, readings = self._write(step, at, text)
                # never acknowledge a step into a file the next start will not open
                self.check_file()
        except BaseException:
            self._forget()
            raise
        self._head = head
        for session_id, rows in payments.items():
            self._payments.setdefault(session_id, {}).update(rows)
        self._readings.update(readings)
        for record in step.sessions:
            if record.final:
                self._payments.pop(record.id, None)
                self._readings.pop(record.id, None)
        return True

    @contextmanager
    def attributed(self, origin: ApiOrigin) -> Iterator[None]:
        """A session a step creates inside this block is stamped with the API client and
        request that asked for it, in that step's transaction (column and journal entry): the
        engine's record stays as it is, and no session is ever stored without its origin."""
        self._origin = origin
        try:
            yield
        finally:
            self._origin = None

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

    def _stamp(self, c: sqlite3.Connection, session_ids: list[str]) -> list[JournalEntry]:
        """Write the origin on the (first) session this step creates; its journal entry."""
        origin = self._origin
        if origin is None or not session_ids:
            return []
        sid = session_ids[0]  # one request, one session
        c.execute(
            "UPDATE sessions SET api_client = ?, api_key = ?, api_request = ? WHERE id = ?",
            (origin.client, origin.key_sha256, origin.request_sha256, sid),
        )
        return [JournalEntry("session", sid, "session.api_client", origin.journal())]

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _notice_other_writers(self) -> None:
        version = self._data_version()
        if version != self._version:
            self._version = version
            self.generation += 1
            self._forget()

    def _forget(self) -> None:
        self._head = None
        self._payments.clear()
        self._readings.clear()

    def _write(
        self, step: Step, at: str, text: Callable[[Json], str]
    ) -> tuple[str, dict[str, dict[str, tuple[object, ...]]], dict[str, int]]:
        """Write the step's rows; the journal's new head and the payment rows written, for the
        caches once the step has committed. A payment row equal to the one this connection last
        wrote is not written again (a meter value changes the session, not its holds)."""
        c = self._conn
        readings: dict[str, int] = {}
        created = [
            s.id
            for s in step.sessions
            if self._origin is not None
            and not c.execute("SELECT 1 FROM sessions WHERE id = ?", (s.id,)).fetchone()
        ]
        for s in step.sessions:
            c.execute(
                "INSERT INTO sessions (id, state, final, data, created_at, updated_at, "
                "owed_minor, terminal)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET state = excluded.state, final = excluded.final,"
                " data = excluded.data, updated_at = excluded.updated_at, owed_minor = "
                "excluded.owed_minor",
                (s.id, s.state, int(s.final), text(s.data), at, at, s.owed_minor, s.terminal),
            )
            readings[s.id] = self._append_readings(s.id, s.readings)
        written: dict[str, dict[str, tuple[object, ...]]] = {}
        for p in step.payments:
            row = (p.state, p.amount_minor, text(p.data))
            if self._payments.get(p.session_id, {}).get(p.id) == row:
                continue
            c.execute(
                "INSERT INTO payments (id, session_id, kind, state, amount_minor, currency, data,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET state = excluded.state, amount_minor = "
                "excluded.amount_minor,"
                " data = excluded.data, updated_at = excluded.updated_at",
                (p.id, p.session_id, p.kind, p.state, p.amount_minor, p.currency, row[2], at, at),
            )
            written.setdefault(p.session_id, {})[p.id] = row
        for t in step.terminals:
            c.execute(
                "INSERT INTO terminals (id, device, protocol, state, data, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET device = excluded.device, protocol = "
                "excluded.protocol,"
                " state = excluded.state, data = excluded.data, updated_at = excluded.updated_at",
                (t.id, t.device, t.protocol, t.state, text(t.data), at),
            )
        journal = [*step.journal, *self._stamp(c, created)]
        head = _journal.append(c, step.key, at, journal, text, self._head)
        for m in step.outbox:
            c.execute(
                "INSERT INTO outbox (message_id, object_key, kind, payload, step_key, created_at,"
                " next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (m.message_id, m.object_key, m.kind, text(m.payload), step.key, at, at),
            )
        for i in step.inbox:
            c.execute(
                "INSERT INTO inbox (message_id, source, kind, payload, received_at) VALUES (?, ?, "
                "?, ?, ?)",
                (i.message_id, i.source, i.kind, text(i.payload), at),
            )
        for b in step.end_of_day:
            previous = c.execute(
                "SELECT at FROM end_of_day WHERE terminal = ? ORDER BY at DESC LIMIT 1",
                (b.terminal,),
            ).fetchone()
            first, last = b.batch_range or (None, None)
            c.execute(
                "INSERT INTO end_of_day (terminal, period_start, at, currency, total_minor, "
                "batch_first,"
                " batch_last, totals, step_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    b.terminal,
                    previous[0] if previous else None,
                    to_text(b.at),
                    b.currency,
                    b.total_minor,
                    first,
                    last,
                    json.dumps([dict(t) for t in b.totals], sort_keys=True),
                    step.key,
                ),
            )
        for message_id in step.inbox_processed:
            cur = c.execute(
                "UPDATE inbox SET processed_at = ? WHERE message_id = ? AND processed_at IS NULL",
                (at, message_id),
            )
            if cur.rowcount != 1:
                raise InvariantViolated(
                    f"inbox message {message_id!r} is unknown or already processed"
                )
        return head, written, readings

    def _append_readings(self, session_id: str, readings: Sequence[tuple[str, int, bool]]) -> int:
        """Add the readings this store does not hold yet, one row each (append-only); how many
        it holds then."""
        stored = self._readings.get(session_id)
        if stored is None:
            stored = int(
                self._conn.execute(
                    "SELECT count(*) FROM meter_readings WHERE session_id = ?", (session_id,)
                ).fetchone()[0]
            )
        if len(readings) > stored:
            self._conn.executemany(
                "INSERT INTO meter_readings (session_id, seq, at, energy_wh, trusted)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (session_id, seq, at, energy_wh, int(trusted))
                    for seq, (at, energy_wh, trusted) in enumerate(readings[stored:], stored)
                ],
            )
        return max(stored, len(readings))

    @staticmethod
    def _refuse_card_data(step: Step, text: Callable[[Json], str]) -> None:
        records: list[tuple[str, Any]] = [
            *((f"session {s.id}", s.data) for s in step.sessions),
            *((f"payment {p.id}", p.data) for p in step.payments),
            *((f"terminal {t.id}", t.data) for t in step.terminals),
            *((f"journal {e.kind}", e.data) for e in step.journal),
            *((f"outbox {m.message_id}", m.payload) for m in step.outbox),
            *((f"inbox {i.message_id}", i.payload) for i in step.inbox),
        ]
        for what, data in records:
            if not _journal.may_hold_card_data(
                text(data)
            ):  # one regex over the text: the usual case
                continue
            key = _journal.find_card_data(data)
            if key:
                raise InvariantViolated(f"{what}: refusing to store card data under key {key!r}")

    # ---- reads -------------------------------------------------------------------------

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

    def save_registration(
        self, versions_url: str, token_b: str, token_c: str, endpoints: dict[str, Any]
    ) -> None:
        """Replace the CPO registration (tokens arrive here already encrypted)."""
        with sqlite_errors(str(self.path)):
            self._conn.execute(
                "INSERT INTO upstream_registration (id, versions_url, token_b, token_c, "
                "endpoints, registered_at)"
                " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET versions_url = "
                "excluded.versions_url,"
                " token_b = excluded.token_b, token_c = excluded.token_c, endpoints = "
                "excluded.endpoints,"
                " registered_at = excluded.registered_at",
                (versions_url, token_b, token_c, _journal.dumps(endpoints), to_text(self._clock())),
            )

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

    def set_upstream_status(self, registered: bool, reason: str) -> None:
        with sqlite_errors(str(self.path)):
            self._conn.execute(
                "INSERT INTO upstream_status (id, state, reason, at) VALUES (1, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET state = excluded.state, reason = excluded.reason, "
                "at = excluded.at",
                ("registered" if registered else "not_registered", reason, to_text(self._clock())),
            )

    def upstream_status(self) -> dict[str, Any] | None:
        """{"registered": bool, "reason": str, "at": datetime} or None if the upstream never ran."""
        rows = self._query("SELECT state, reason, at FROM upstream_status", ())
        if not rows:
            return None
        state, reason, at = rows[0]
        return {"registered": state == "registered", "reason": reason, "at": from_text(at)}

    def forget_registration(self) -> None:
        with sqlite_errors(str(self.path)):
            self._conn.execute("DELETE FROM upstream_registration")

    def registration(self) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT versions_url, token_b, token_c, endpoints, registered_at FROM "
            "upstream_registration",
            (),
        )
        if not rows:
            return None
        url, token_b, token_c, endpoints, at = rows[0]
        return {
            "versions_url": url,
            "token_b": token_b,
            "token_c": token_c,
            "endpoints": json.loads(endpoints),
            "registered_at": at,
        }

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

    def integrity(self) -> str | None:
        """SQLite's own full check of the file: None when it is sound, else its first complaint."""
        rows = self._query("PRAGMA integrity_check(5)", ())
        found = [str(r[0]) for r in rows]
        return None if found == ["ok"] else "; ".join(found)

    def verify_journal(self, trusted_key: str | None = None) -> AuditReport:
        with sqlite_errors(str(self.path)):
            return _journal.verify(self._conn, trusted_key)

    def sign_journal(self, key: Ed25519PrivateKey) -> Checkpoint | None:
        """Sign the journal's head with the device key (at intervals and at shutdown)."""
        with transaction(self._conn, str(self.path)):
            return _journal.sign_checkpoint(self._conn, key, to_text(self._clock()))

    def prune(
        self,
        key: Ed25519PrivateKey,
        *,
        cutoff: datetime,
        archive_dir: Path,
        max_rows: int = 20_000,
        compact: Compact | None = None,
    ) -> Pruned:
        """One retention cut (see ``gateway.store.retention``): journal rows of sessions final
        before ``cutoff`` archived under a signed cut, old delivered messages removed."""
        try:
            with transaction(self._conn, str(self.path)):
                self._notice_other_writers()
                return _retention.prune(
                    self._conn,
                    key,
                    now=to_text(self._clock()),
                    cutoff=to_text(cutoff),
                    archive_dir=archive_dir,
                    max_rows=max_rows,
                    compact=compact,
                )
        except BaseException:
            self._forget()
            raise

    def prune_older_than(
        self,
        key: Ed25519PrivateKey,
        *,
        days: int,
        archive_dir: Path | None,
        compact: Compact | None = None,
    ) -> Pruned:
        """One cut of what is older than ``days`` (the site's ``[journal] retention_days``),
        archived under ``archive_dir`` (None: beside the database); the daemon runs it hourly,
        ``evpay store prune`` on demand. The two values, not the config: the store reads none."""
        return self.prune(
            key,
            cutoff=self._clock() - timedelta(days=days),
            archive_dir=_retention.archive_dir(self.path, archive_dir),
            compact=compact,
        )

    def journal_export(
        self,
        *,
        session: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """The audit trail of one session or a time range: see ``gateway.store.export``."""
        with sqlite_errors(str(self.path)):
            return _export.build(
                self._conn,
                session=session,
                start=to_text(start) if start else None,
                end=to_text(end) if end else None,
                exported_at=to_text(self._clock()),
            )

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (at shutdown, so a copied file is complete)."""
        with sqlite_errors(str(self.path)):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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


# Is a step key applied? Its journal entries say so (legacy_steps: keys of the steps that wrote
# no journal entry before migration 0008).
_APPLIED = (
    "SELECT 1 FROM journal WHERE step_key = ? UNION ALL SELECT 1 FROM legacy_steps WHERE "
    "key = ? LIMIT 1"
)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


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


__all__ = ["Store", "StoreError"]
