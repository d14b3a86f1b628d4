"""A day of N sessions reconciled from a real SQLite store: the time to load the facts and the
time of the pure comparison.

    python bench/reconcile.py [--sessions 10000] [--dir /var/lib/evpay]

The day is written as session rows the way the engine writes them (one completed card session
each, Mastercard or Visa), plus the terminal's end-of-day batch with matching totals. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.base import BrandTotal, Outcome, TerminalResult
from gateway.cli.reconcile_cmd import load_facts
from gateway.payments.model import Bill, Hold, HoldStatus, Metering, Session
from gateway.payments.reconcile import reconcile
from gateway.payments.record import to_json
from gateway.payments.session import State
from gateway.runtime.engine_host import EngineHost
from gateway.store import SessionRecord, Step, Store
from tests.payments.fixtures import policy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start = datetime.now(UTC) - timedelta(hours=23)
        now = [start]
        store = Store.open(Path(tmp) / "bench.sqlite3", clock=lambda: now[0])
        totals: dict[str, list[int]] = {"mastercard": [0, 0], "visa": [0, 0]}
        began = time.perf_counter()
        for n in range(args.sessions):
            brand = ("MasterCard", "VISA")[n % 2]
            amount = 300 + n % 900
            at = start + timedelta(seconds=8 * n)
            now[0] = at
            s = Session(
                f"s{n:05d}",
                "E1",
                "T1",
                "EUR",
                State.COMPLETED,
                at,
                hold_minor=5000,
                holds=(
                    Hold(
                        str(n),
                        5000,
                        n,
                        amount,
                        amount,
                        5000 - amount,
                        HoldStatus.CAPTURED,
                        str(n + 1),
                    ),
                ),
                reference=f"EVP-s{n:05d}",
                card={"brand": brand},
                bill=Bill(price_minor=amount, captured_at=at),
                metering=Metering(billed_energy_wh=2000, reported_energy_wh=2000),
            )
            store.apply(
                Step(
                    f"b{n}",
                    sessions=[
                        SessionRecord(s.id, s.state.value, to_json(s), final=True, terminal="T1")
                    ],
                )
            )
            group = totals["mastercard" if n % 2 == 0 else "visa"]
            group[0] += 1
            group[1] += amount
        written = time.perf_counter() - began
        now[0] = start + timedelta(hours=23)
        result = TerminalResult(
            "end_of_day",
            Outcome.APPROVED,
            totals=tuple(BrandTotal(b, c, a, "EUR") for b, (c, a) in totals.items()),
        )
        EngineHost(store, policy(), lambda: now[0]).record_end_of_day("T1", result, "EUR")
        t0 = time.perf_counter()
        facts = load_facts(
            store, start - timedelta(minutes=1), now[0] + timedelta(minutes=1), now[0]
        )
        t1 = time.perf_counter()
        report = reconcile(facts)
        t2 = time.perf_counter()
        store.close()
    print(f"sessions written: {args.sessions} in {written:.1f} s (one durable step each)")
    print(
        f"load facts from SQLite: {(t1 - t0) * 1000:.0f} ms; reconcile: {(t2 - t1) * 1000:.0f} ms; "
        f"findings: {len(report.findings)}"
    )


if __name__ == "__main__":
    main()
