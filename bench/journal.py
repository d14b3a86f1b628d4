"""Checking and exporting the journal: how long `evpay journal verify` and an export take for a
journal of N rows with signed checkpoints.

    python bench/journal.py [--rows 50000] [--dir /var/lib/evpay]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store import JournalEntry, SessionRecord, Step, Store
from gateway.store.journal import load_signing_key, new_signing_key, public_key_hex


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    key = load_signing_key(new_signing_key(), "bench")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = Store.open(Path(tmp) / "bench.sqlite3")
        began = time.perf_counter()
        for n in range(args.rows):
            sid = f"s{n // 10:06d}"  # ten journal rows per session, as a charge writes them
            entry = JournalEntry("session", sid, "MeterValue", {"n": n, "energy_wh": n * 10})
            store.apply(
                Step(f"k{n}", sessions=[SessionRecord(sid, "charging", {"n": n})], journal=[entry])
            )
            if n % 5000 == 4999:
                store.sign_journal(key)
        written = time.perf_counter() - began
        t0 = time.perf_counter()
        report = store.verify_journal(public_key_hex(key))
        t1 = time.perf_counter()
        doc = store.journal_export(session=f"s{args.rows // 20:06d}")
        t2 = time.perf_counter()
        store.close()
    print(
        f"journal rows: {args.rows} written in {written:.1f} s; {report.checkpoints} signed "
        f"checkpoints"
    )
    print(
        f"verify: {(t1 - t0) * 1000:.0f} ms ({'intact' if report.ok else 'TAMPERED'}); export of "
        f"one session: "
        f"{(t2 - t1) * 1000:.0f} ms, {len(doc['rows'])} rows"
    )


if __name__ == "__main__":
    main()
