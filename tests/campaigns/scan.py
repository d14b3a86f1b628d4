"""Card data and secrets: nothing that looks like a full card number or a secret in clear.

A full PAN is a run of 13 to 19 digits (spaces or dashes allowed between groups of 4) that
passes the Luhn check, starts as a card number can (3 to 7: the payment brands and fleet
cards; 2221 to 2720: Mastercard's 2-series) and stands alone (not part of a longer run of
digits, nor of a word or a hex id). The
prefix rule keeps compact timestamps (``2026…``) and counters out: a tenth of any digit run is
Luhn-valid by chance.
A masked PAN (first 6, last 4, ``*`` between) is fine. Secrets are given by value (the
tests know their tokens and passwords) and must not appear anywhere as a value of their own
(not glued to letters or digits: a six-digit terminal password turns up by chance inside a
timestamp's microseconds or a hash, as the full crash run showed). SQLite databases are
read table by table (every column of every row, the WAL folded in by SQLite itself); other
files are read as bytes (logs, archives, exports, JSON).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# A run of digits standing alone: not glued to letters or other digits (a random hex id holds a
# run of 13 digits often enough, and a tenth of those pass Luhn).
_DIGITS = re.compile(rb"(?<![0-9A-Za-z])(?:[0-9][ -]?){12,18}[0-9](?![0-9A-Za-z])")


@dataclass(frozen=True)
class Hit:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_prefix(digits: str) -> bool:
    return digits[0] in "34567" or 2221 <= int(digits[:4]) <= 2720


def card_numbers(data: bytes) -> Iterator[str]:
    """Luhn-valid 13..19-digit runs (shown masked: the scanner must not print a PAN either)."""
    for match in _DIGITS.finditer(data):
        digits = re.sub(rb"[ -]", b"", match.group()).decode("ascii")
        if (
            13 <= len(digits) <= 19
            and _card_prefix(digits)
            and luhn(digits)
            and len(set(digits)) > 2
        ):
            yield f"{digits[:6]}{'*' * (len(digits) - 10)}{digits[-4:]} (a Luhn-valid {len(digits)}-digit number)"


def scan_bytes(where: str, data: bytes, secrets: Iterable[str] = ()) -> list[Hit]:
    hits = [Hit(where, what) for what in card_numbers(data)]
    hits += [
        Hit(where, f"secret in clear ({s[:2]}…, {len(s)} chars)")
        for s in secrets
        if s and _alone(s, data)
    ]
    return hits


def _alone(secret: str, data: bytes) -> bool:
    return (
        re.search(rb"(?<![0-9A-Za-z])" + re.escape(secret.encode()) + rb"(?![0-9A-Za-z])", data)
        is not None
    )


def scan_database(path: Path, secrets: Iterable[str] = ()) -> list[Hit]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    hits: list[Hit] = []
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite_master
                text = "\x1f".join(
                    "" if v is None else v.decode("latin-1") if isinstance(v, bytes) else str(v)
                    for v in row
                )
                hits += scan_bytes(f"{path.name}:{table}", text.encode("utf-8", "replace"), secrets)
    finally:
        conn.close()
    return hits


def scan_paths(paths: Iterable[Path], secrets: Iterable[str] = ()) -> list[Hit]:
    secrets = list(secrets)
    hits: list[Hit] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if f.name.endswith(("-wal", "-shm", ".lock")):
                continue  # read through the database itself
            head = f.read_bytes()[:16]
            if head.startswith(b"SQLite format 3"):
                hits += scan_database(f, secrets)
            else:
                hits += scan_bytes(str(f), f.read_bytes(), secrets)
    return hits
