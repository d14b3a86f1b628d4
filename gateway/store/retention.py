"""Retention: the journal's oldest rows archived to a file and removed, under a signed cut.

The rows removed are a prefix of the chain, up to the last row before anything that must stay:
a row newer than the cutoff, or any row of a session that is open or changed since the cutoff.
Before a row goes, the rows are written to an export file (``evpay journal verify-export``
checks it on its own, against the checkpoint signed at the cut) and fsynced; the device key
then signs the cut (the last archived row's hash and the file's SHA-256) and the rows go in
the same transaction. ``audit`` starts the remaining chain from the cut. A final session that
owes nothing and has no journal row left is then compacted: its full row (with its meter
readings) goes to a ``sessions-*.jsonl`` archive file, the row keeps no default fields and its
readings go.
Delivered outbox messages and processed inbox requests older than the cutoff go too;
dead-lettered ones stay (they are an open problem, not history), and so does each session's
first CDR for the ``CORRECTION_WINDOW`` after it came (a later CDR is a correction only beside
it). A step key is known as applied for as long as its journal rows are kept: the retention
period.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import InvariantViolated
from gateway.store import export as _export
from gateway.store.audit import audit, cut_message
from gateway.store.db import from_text, to_text
from gateway.store.files import write_private
from gateway.store.journal import dumps, newest_cut, public_key_hex, rows, sign_checkpoint

Compact = Callable[[dict[str, Any]], dict[str, Any]]  # an archived session's row, smaller

# How long a session's first CDR is kept whatever the retention period: a corrected CDR is
# told from a first one by it (the first bills, a later one refunds or adds to the debt). A CPO
# corrects within weeks; an acquirer refunds a payment for about a year, so a correction after
# that could not be refunded anyway.
CORRECTION_WINDOW = timedelta(days=400)


@dataclass(frozen=True, slots=True)
class Pruned:
    cut_seq: int | None  # the last row archived (None: nothing was old enough)
    journal_rows: int
    archive: Path | None
    outbox_rows: int
    inbox_rows: int
    sessions_compacted: int = 0

    @property
    def anything(self) -> bool:
        return self.cut_seq is not None or bool(self.sessions_compacted)


def prune(
    conn: sqlite3.Connection,
    key: Ed25519PrivateKey,
    *,
    now: str,
    cutoff: str,
    archive_dir: Path,
    max_rows: int,
    compact: Compact | None = None,
) -> Pruned:
    """One cut of at most ``max_rows`` journal rows, in the caller's write transaction; then,
    with ``compact``, up to ``max_rows`` sessions whose journal rows are all archived get their
    row compacted (the full row written to an archive file first)."""
    outbox = conn.execute(
        "DELETE FROM outbox WHERE status = 'done' AND done_at < ?", (cutoff,)
    ).rowcount
    # ... but never a session's first CDR while a corrected CDR may still come: it is what
    # tells a correction from a first bill (``ocpi.charger``: the oldest CDR stored)
    window = to_text(from_text(now) - CORRECTION_WINDOW)
    inbox = conn.execute(
        "DELETE FROM inbox WHERE processed_at IS NOT NULL AND processed_at < ?"
        " AND NOT (kind = 'cdr' AND received_at >= ? AND id IN (SELECT min(id) FROM inbox"
        " WHERE kind = 'cdr' GROUP BY json_extract(payload, '$.authorization_reference')))",
        (cutoff, window),
    ).rowcount
    cut, removed, archive = _cut(
        conn, key, now=now, cutoff=cutoff, archive_dir=archive_dir, max_rows=max_rows
    )
    compacted = 0
    if compact is not None:
        compacted = _compact_sessions(
            conn, compact, now=now, cutoff=cutoff, archive_dir=archive_dir, limit=max_rows
        )
    return Pruned(cut, removed, archive, outbox, inbox, compacted)


def _compact_sessions(
    conn: sqlite3.Connection,
    compact: Compact,
    *,
    now: str,
    cutoff: str,
    archive_dir: Path,
    limit: int,
) -> int:
    """Final sessions that owe nothing, unchanged since the cutoff, with no journal row left."""
    rows = conn.execute(
        "SELECT id, state, created_at, updated_at, data FROM sessions s WHERE final = 1 AND "
        "owed_minor = 0"
        " AND updated_at < ? AND compacted = 0 AND NOT EXISTS"
        " (SELECT 1 FROM journal j WHERE j.entity = 'session' AND j.entity_id = s.id) ORDER BY id "
        "LIMIT ?",
        (cutoff, limit),
    ).fetchall()
    if not rows:
        return 0
    full = [(i, st, c, u, _with_readings(conn, i, json.loads(d))) for i, st, c, u, d in rows]
    lines = [
        json.dumps(
            {"id": i, "state": st, "created_at": c, "updated_at": u, "data": data},
            sort_keys=True,
            separators=(",", ":"),
        )
        for i, st, c, u, data in full
    ]
    stamp = now.replace(":", "").replace(".", "")
    _write_durably(
        archive_dir / f"sessions-{stamp}-{rows[0][0][:40]}.jsonl",
        ("\n".join(lines) + "\n").encode(),
    )
    # Each row also moves to a new rowid: SQLite writes it again densely at the table's end and
    # the old pages, emptied, are free for reuse (a row shrunk in place would leave them sparse).
    next_rowid = int(conn.execute("SELECT coalesce(max(rowid), 0) FROM sessions").fetchone()[0]) + 1
    for n, (session_id, *_, data) in enumerate(full):
        conn.execute(
            # updated_at unchanged
            "UPDATE sessions SET data = ?, rowid = ?, compacted = 1 WHERE id = ?",
            (dumps(compact(data)), next_rowid + n, session_id),
        )
        conn.execute("DELETE FROM meter_readings WHERE session_id = ?", (session_id,))
    return len(rows)


def _with_readings(
    conn: sqlite3.Connection, session_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    """A session's full row: its meter readings from their table (migration 0010), if any."""
    found = conn.execute(
        "SELECT at, energy_wh, trusted FROM meter_readings WHERE session_id = ? ORDER BY seq",
        (session_id,),
    ).fetchall()
    if found:
        data["readings"] = [[at, energy_wh, bool(trusted)] for at, energy_wh, trusted in found]
    return data


def _cut(
    conn: sqlite3.Connection,
    key: Ed25519PrivateKey,
    *,
    now: str,
    cutoff: str,
    archive_dir: Path,
    max_rows: int,
) -> tuple[int | None, int, Path | None]:
    """(the last row archived, the rows removed, the archive file), or (None, 0, None)."""
    first, last = conn.execute("SELECT min(seq), max(seq) FROM journal").fetchone()
    if first is None:
        return None, 0, None
    stay = [int(last)]  # the newest row always stays: the chain goes on from it
    newer = conn.execute(
        "SELECT seq FROM journal WHERE at >= ? ORDER BY seq LIMIT 1", (cutoff,)
    ).fetchone()
    if newer:
        stay.append(int(newer[0]))
    for (session,) in conn.execute(
        "SELECT id FROM sessions WHERE final = 0 OR updated_at >= ?", (cutoff,)
    ).fetchall():
        found = conn.execute(
            "SELECT min(seq) FROM journal WHERE entity = 'session' AND entity_id = ?", (session,)
        ).fetchone()[0]
        if found is not None:
            stay.append(int(found))
    cut = min(min(stay) - 1, int(first) + max_rows - 1)
    if cut < first:
        return None, 0, None
    # A cut signs what it archives: never rows that do not verify. The rows to archive and the
    # link to the next one, chained from the newest cut (or from the start): what this cut
    # needs, not the whole journal again for every cut of a long backlog.
    report = audit(rows(conn, int(first), cut + 1), (), public_key_hex(key), cut=newest_cut(conn))
    if not report.ok:
        raise InvariantViolated(
            f"the journal does not verify ({report.findings[0].text}): no retention cut "
            "until `evpay journal verify` is clean"
        )
    checkpoint = sign_checkpoint(conn, key, now, seq=cut)
    if checkpoint is None:
        raise InvariantViolated(f"journal row {cut} vanished inside the retention transaction")
    doc = _export.archive(conn, int(first), cut, checkpoint, now)
    text = json.dumps(doc, indent=1).encode("utf-8")
    name = f"journal-{int(first):012d}-{cut:012d}.json"
    _write_durably(archive_dir / name, text)
    digest = hashlib.sha256(text).hexdigest()
    signature = key.sign(cut_message(cut, checkpoint.head_hash, digest, now)).hex()
    conn.execute(
        "INSERT INTO journal_cuts (seq, head_hash, archive, archive_sha256, at, public_key, "
        "signature)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (cut, checkpoint.head_hash, name, digest, now, public_key_hex(key), signature),
    )
    removed = conn.execute("DELETE FROM journal WHERE seq <= ?", (cut,)).rowcount
    return cut, removed, archive_dir / name


def _write_durably(path: Path, data: bytes) -> None:
    """The archive is on disk (file and directory entry fsynced) before any row goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash, or a planted symlink: never followed
    # money records: 0600 from its creation, O_EXCL|O_NOFOLLOW (no window, no symlink)
    write_private(tmp, data, exclusive=True)
    tmp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def archive_dir(database: Path, configured: Path | None) -> Path:
    return configured or database.parent / "journal-archive"
