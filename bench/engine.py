"""Durable session steps per second through the real engine host and SQLite store.

    python bench/engine.py [--sessions 300] [--meter-values 10] [--dir /var/lib/evpay]

Each session: card, pre-auth approved, charger started, N meter values, stopped, capture
approved — every one a store step (WAL, synchronous=FULL: one fsync per step). Prints
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

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import policy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--meter-values", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes (default: a temp dir)")
    args = parser.parse_args()
    now = [datetime(2026, 1, 5, 8, tzinfo=UTC)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = Store.open(Path(tmp) / "bench.sqlite3", clock=lambda: now[0])
        host = EngineHost(store, policy(), lambda: now[0])
        steps = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(args.sessions):
            sid = f"bench-{i:06d}"
            events: list[e.Event] = [e.CardPresented(sid, "card", "E1", "T1", "EUR")]
            handled = host.handle(events[0])
            events = [
                e.TerminalResultArrived(sid, "pre", "preauthorize", Outcome.APPROVED, 5000, i % 9999 + 1),
                e.ChargerStarted(sid, "start", 0),
                *(e.MeterValue(sid, f"m{k}", 1000 * (k + 1)) for k in range(args.meter_values)),
                e.ChargerStopped(sid, "stop", 1000 * args.meter_values + 500),
            ]
            for ev in events:
                now[0] += timedelta(seconds=30)
                handled = host.handle(ev)
                steps += 1
            capture = next(x for x in handled.commands if isinstance(x, c.Capture))
            host.handle(e.TerminalResultArrived(sid, "cap", "capture", Outcome.APPROVED, capture.amount_minor, 1))
            steps += 2
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        assert all(s["final"] for s in store.sessions(limit=args.sessions))
        print(f"engine: {args.sessions} sessions, {steps} durable steps in {wall:.2f} s")
        print(f"  {steps / wall:,.0f} steps/s   {args.sessions / wall:,.1f} sessions/s   "
              f"{1000 * wall / steps:.2f} ms/step wall   {1000 * cpu / steps:.2f} ms/step CPU")  # fmt: skip
        size = (Path(tmp) / "bench.sqlite3").stat().st_size
        print(f"  database {size / 1e6:.1f} MB after the run (before checkpoint of the WAL)")
        store.close()


if __name__ == "__main__":
    main()
