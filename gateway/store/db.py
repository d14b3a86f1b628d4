"""SQLite connection, pragmas, schema migrations and error mapping.

The only module family that imports sqlite3 is ``gateway.store``. Durability settings:
WAL (readers never block the one writer), ``synchronous=FULL`` (a committed step survives
power loss), foreign keys on, a busy timeout. Every sqlite3 error leaves here as a
``StoreError`` that says what happened to the file and what to do.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from gateway.errors import SchemaTooNew, StoreCorrupt, StoreError, StoreFull, StoreReadOnly
from gateway.store.files import create_database_file

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every shipped migration, in order, numbered 1..N without gaps."""
    found = []
    for entry in resources.files("gateway.store.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _, _ in found] != list(range(1, len(found) + 1)):
        raise StoreError(
            "shipped migrations are not numbered 0001..N without gaps (a packaging bug)"
        )
    return found


def latest_version() -> int:
    return len(migrations())


@contextmanager
def sqlite_errors(path: str) -> Iterator[None]:
    """Translate sqlite3 errors into StoreErrors that name the file and the fix."""
    try:
        yield
    except sqlite3.Error as exc:
        raise classify(exc, path) from exc


@contextmanager
def transaction(conn: sqlite3.Connection, path: str) -> Iterator[None]:
    """One write transaction (BEGIN IMMEDIATE: the write lock first, so it cannot fail half
    way on a busy lock); committed when the block ends, rolled back when it raises."""
    with sqlite_errors(path):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def classify(exc: sqlite3.Error, path: str) -> StoreError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name == "SQLITE_FULL" or "disk is full" in text:
        return StoreFull(path)
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return StoreReadOnly(path)
    if (
        name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or "malformed" in text
        or "not a database" in text
    ):
        return StoreCorrupt(path, text)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(
            f"{path}: the database is locked by another process ({text}); "
            "is a second evpay daemon running on the same file?"
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreError(
            f"{path}: cannot open the database file ({text}); check the directory exists"
        )
    return StoreError(f"{path}: database error: {text}")


def connect(
    path: Path,
    *,
    read_only: bool = False,
    busy_timeout_ms: int = 5000,
    check: bool = False,
    group: str | None = None,
) -> sqlite3.Connection:
    """Open the database with the durability pragmas; no implicit transactions. ``check``:
    run SQLite's quick_check first (it reads the whole file: 0.66 s a GB), which the daemon
    asks for after an unclean shutdown; otherwise it runs after READY (``quick_check``)."""
    where = str(path)
    with sqlite_errors(where):
        if read_only:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            create_database_file(path, group)  # 0600 (0640 for a group), never the umask's
            conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not read_only:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StoreError(
                        f"{where}: cannot switch the database to WAL mode (got {mode})"
                    )
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if check:
                quick_check(conn, where)
        except BaseException:
            conn.close()
            raise
    return conn


def quick_check(conn: sqlite3.Connection, where: str) -> None:
    """StoreCorrupt unless SQLite's quick_check finds the file sound."""
    with sqlite_errors(where):
        found = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    if found != "ok":
        raise StoreCorrupt(where, f"quick_check: {found}")


def quick_check_path(path: Path) -> None:
    """quick_check on a connection of its own (read-only): safe in a thread beside the
    daemon's writer, which WAL lets go on meanwhile."""
    conn = connect(path, read_only=True)
    try:
        quick_check(conn, str(path))
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection, path: str) -> tuple[int, int]:
    """Apply pending migrations, each in its own transaction. Returns (before, after)."""
    shipped = migrations()
    known = len(shipped)
    with sqlite_errors(path):
        before = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if before > known:
            raise SchemaTooNew(path, before, known)
        for version, _name, sql in shipped[before:]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    return before, known


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _statements(sql: str) -> Iterator[str]:
    """Split a migration into statements (sqlite3 runs one per execute; triggers contain ';')."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if not buffer and line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise StoreError(f"incomplete SQL statement in a migration: {buffer.strip()[:60]!r}")


def to_text(moment: datetime) -> str:
    """Fixed-width UTC text, so that string order is time order in SQL comparisons."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: the store only records aware UTC times")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_text(text: str) -> datetime:
    """What ``to_text`` wrote (fromisoformat: strptime was a tenth of a step's time)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r}: not an aware UTC time")
    return moment
