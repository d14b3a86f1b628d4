"""The append-only journal of every state change, hash-chained for tamper evidence.

Each entry's hash covers the previous entry's hash and the entry itself, so a deleted,
edited or reordered entry breaks the chain at that point (``verify`` says where). The
schema's triggers refuse UPDATE and DELETE outright.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

from gateway.store.records import JournalEntry, Json

GENESIS = "0" * 64
# Card data must never be persisted; a key like these in any record is a bug, not data.
FORBIDDEN_KEYS = frozenset({"pan", "card_number", "track1", "track2", "track3", "pin", "cvv", "cvc"})


def dumps(data: Json) -> str:
    """Canonical JSON: the same data always gives the same text (and the same hash)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, step_key: str, at: str, entry: JournalEntry, data_text: str) -> str:
    material = "\x1f".join((prev_hash, step_key, at, entry.entity, entry.entity_id, entry.kind, data_text))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def append(conn: sqlite3.Connection, step_key: str, at: str, entries: list[JournalEntry]) -> None:
    row = conn.execute("SELECT hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    prev = row[0] if row else GENESIS
    for entry in entries:
        text = dumps(entry.data)
        digest = entry_hash(prev, step_key, at, entry, text)
        conn.execute(
            "INSERT INTO journal (step_key, at, entity, entity_id, kind, data, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (step_key, at, entry.entity, entry.entity_id, entry.kind, text, prev, digest),
        )
        prev = digest


@dataclass(frozen=True, slots=True)
class ChainReport:
    entries: int
    broken_at: int | None  # seq of the first entry whose hash does not match


def verify(conn: sqlite3.Connection) -> ChainReport:
    prev = GENESIS
    count = 0
    rows = conn.execute(
        "SELECT seq, step_key, at, entity, entity_id, kind, data, prev_hash, hash FROM journal ORDER BY seq"
    )
    for seq, step_key, at, entity, entity_id, kind, data, prev_hash, digest in rows:
        entry = JournalEntry(entity, entity_id, kind)
        if prev_hash != prev or entry_hash(prev, step_key, at, entry, data) != digest:
            return ChainReport(count, seq)
        prev = digest
        count += 1
    return ChainReport(count, None)


def find_card_data(data: object, path: str = "") -> str | None:
    """Dotted path of the first forbidden card-data key in nested data, or None."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            if str(key).lower() in FORBIDDEN_KEYS:
                return here
            found = find_card_data(value, here)
            if found:
                return found
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            found = find_card_data(value, f"{path}[{i}]")
            if found:
                return found
    return None
