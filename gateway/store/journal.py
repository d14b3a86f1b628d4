"""The append-only journal of every state change, hash-chained for tamper evidence, and its
signed checkpoints.

Each entry's hash covers the previous entry's hash and the entry itself (``audit`` checks the
chain and names what was changed). The schema's triggers refuse UPDATE and DELETE outright;
someone with the file and sqlite3 can drop them, which is what the chain and the device key's
checkpoints are for.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import SecretUnavailable
from gateway.store.audit import (
    GENESIS,
    AuditReport,
    ChainRow,
    Checkpoint,
    Content,
    Cut,
    audit,
    checkpoint_message,
    row_hash,
)
from gateway.store.records import JournalEntry, Json

# Card data must never be persisted; a key like these in any record is a bug, not data.
FORBIDDEN_KEYS = frozenset(
    {"pan", "card_number", "track1", "track2", "track3", "pin", "cvv", "cvc"}
)


def dumps(data: Json) -> str:
    """Canonical JSON: the same data always gives the same text (and the same hash)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def append(
    conn: sqlite3.Connection,
    step_key: str,
    at: str,
    entries: list[JournalEntry],
    text: Callable[[Json], str] = dumps,
    head: str | None = None,
) -> str:
    """Chain ``entries`` after ``head`` (the last row's hash; read from the table when the
    caller does not know it) and return the new head."""
    if head is None:
        row = conn.execute("SELECT hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        head = row[0] if row else GENESIS
    prev = head
    for entry in entries:
        content = Content(step_key, at, entry.entity, entry.entity_id, entry.kind, text(entry.data))
        digest = row_hash(prev, content)
        conn.execute(
            "INSERT INTO journal (step_key, at, entity, entity_id, kind, data, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (step_key, at, entry.entity, entry.entity_id, entry.kind, content.data, prev, digest),
        )
        prev = digest
    return prev


_ROW = "SELECT seq, prev_hash, hash, step_key, at, entity, entity_id, kind, data FROM journal"


def rows(conn: sqlite3.Connection, first: int = 1, last: int | None = None) -> list[ChainRow]:
    """Rows ``first``..``last`` (inclusive) in seq order, with their stored content."""
    found = conn.execute(
        f"{_ROW} WHERE seq >= ? AND seq <= ? ORDER BY seq", (first, last or 2**62)
    ).fetchall()
    return [ChainRow(seq, prev, digest, Content(*content)) for seq, prev, digest, *content in found]


def checkpoints(conn: sqlite3.Connection) -> list[Checkpoint]:
    found = conn.execute(
        "SELECT id, seq, head_hash, at, public_key, signature FROM journal_checkpoints ORDER BY id"
    ).fetchall()
    return [Checkpoint(*row) for row in found]


def written(conn: sqlite3.Connection) -> int | None:
    """How many rows SQLite ever numbered (its AUTOINCREMENT counter): a cut-off tail shows."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
    return int(row[0]) if row else None


def newest_cut(conn: sqlite3.Connection) -> Cut | None:
    row = conn.execute(
        "SELECT id, seq, head_hash, archive, archive_sha256, at, public_key, signature FROM "
        "journal_cuts"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return Cut(*row) if row else None


def verify(conn: sqlite3.Connection, trusted_key: str | None) -> AuditReport:
    first = conn.execute("SELECT min(seq) FROM journal").fetchone()[0] or 1
    return audit(
        rows(conn, first),
        checkpoints(conn),
        trusted_key,
        written=written(conn),
        cut=newest_cut(conn),
    )


def sign_checkpoint(
    conn: sqlite3.Connection, key: Ed25519PrivateKey, at: str, seq: int | None = None
) -> Checkpoint | None:
    """Sign the current chain head, or row ``seq`` (in the caller's transaction); None when
    the newest checkpoint already covers the head (never for an explicit ``seq``)."""
    if seq is None:
        head = conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        newest = conn.execute(
            "SELECT seq FROM journal_checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if head is None or (newest is not None and newest[0] >= head[0]):
            return None
    else:
        head = conn.execute("SELECT seq, hash FROM journal WHERE seq = ?", (seq,)).fetchone()
        if head is None:
            return None
    seq, digest = int(head[0]), str(head[1])
    signature = key.sign(checkpoint_message(seq, digest, at)).hex()
    public = public_key_hex(key)
    cur = conn.execute(
        "INSERT INTO journal_checkpoints (seq, head_hash, at, public_key, signature) VALUES (?, "
        "?, ?, ?, ?)",
        (seq, digest, at, public, signature),
    )
    return Checkpoint(int(cur.lastrowid or 0), seq, digest, at, public, signature)


def load_signing_key(pem: str, where: str) -> Ed25519PrivateKey:
    """The device key from its PEM text (``openssl genpkey -algorithm ed25519`` or
    ``evpay journal keygen``); SecretUnavailable names where it came from, never its content."""
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        raise SecretUnavailable(
            f"{where}: not an unencrypted PEM private key (make one with "
            "`evpay journal keygen --out FILE`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SecretUnavailable(
            f"{where}: the journal key must be an Ed25519 key, not {type(key).__name__}"
        )
    return key


def new_signing_key() -> str:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode("ascii")


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


_CARD_KEY = re.compile(r'[{,]"(?:' + "|".join(sorted(FORBIDDEN_KEYS)) + r')":', re.IGNORECASE)


def may_hold_card_data(text: str) -> bool:
    """Whether canonical JSON text has a forbidden key anywhere (a key follows ``{`` or ``,``;
    inside a string value those characters' quotes would be escaped)."""
    return _CARD_KEY.search(text) is not None


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
