"""Store size per finished session, before and after retention.

    python bench/retention.py [--sessions 20000]

The sessions are those of bench/restart.py (copies of one session run through the real
engine). Retention then cuts everything final before the cutoff (here: all of them), in cuts
of 20,000 journal rows, archiving each to a file, and compacts the archived sessions' rows.
Size is what the database file holds (its pages less the free ones, which SQLite reuses before
it grows the file). Prints figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.restart import fill
from gateway.payments.record import compact
from gateway.store import Store


def live_bytes(store: Store) -> int:
    found = store.stats()
    return int(found["file_bytes"]) - int(found["free_bytes"])


def figures(tmp: Path, sessions: int) -> dict[str, float]:
    """Bytes of the file per finished session, before and after retention; archive bytes."""
    db = tmp / "retention.sqlite3"
    fill(db, sessions, tmp)
    store = Store.open(db)
    before = live_bytes(store)
    key = Ed25519PrivateKey.generate()
    cutoff = datetime.now(UTC) + timedelta(days=1)  # everything is older than the retention period
    while store.prune(key, cutoff=cutoff, archive_dir=tmp / "archive", compact=compact).anything:
        pass
    after = live_bytes(store)
    assert store.verify_journal().ok
    store.close()
    archived = sum(p.stat().st_size for p in (tmp / "archive").iterdir())
    return {"before": before / sessions, "after": after / sessions, "archive": archived / sessions}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = figures(Path(tmp), args.sessions)
    print(
        f"{args.sessions:,} finished sessions: {got['before'] / 1024:.1f} KiB each before "
        f"retention, "
        f"{got['after'] / 1024:.2f} KiB after ({got['archive'] / 1024:.1f} KiB each in the "
        f"archive files)"
    )


if __name__ == "__main__":
    main()
