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
from gateway.store import journal as _journal
from gateway.store import retention as _retention
from gateway.store.acquirer import AcquirerBook
from gateway.store.db import (
    connect,
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
from gateway.store.store_journal import StoreJournal
from gateway.store.store_reads import _APPLIED


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Store(StoreJournal):
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


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


__all__ = ["Store", "StoreError"]
