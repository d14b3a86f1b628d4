"""Durable session steps per second through the real engine host and SQLite store.

    python bench/engine.py [--sessions 300] [--meter-values 10] [--dir /var/lib/evpay]

Each session: card, pre-auth approved, charger started, N meter values, stopped, capture
approved — every one a store step (WAL, synchronous=FULL: one fsync per step). Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.runtime.engine_host import EngineHost, Handled
from gateway.store import Store
from tests.payments.fixtures import policy


def one_session(
    host: EngineHost,
    now: list[datetime],
    sid: str,
    terminal: str,
    meter_values: int,
    refs: tuple[str, str],
) -> tuple[Handled, int]:
    """One session through the real engine, every event a durable step: card, pre-auth approved
    (hold ``refs[0]``), charger started, ``meter_values`` readings 30 s apart, stopped, capture
    approved (``refs[1]``). The last step and how many steps were taken. (``restart.py`` stores
    copies of one such session.)"""
    host.handle(e.CardPresented(sid, "card", "E1", terminal, "EUR"))
    events: list[e.Event] = [
        e.TerminalResultArrived(
            session_id=sid,
            event_id="pre",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref=refs[0],
        ),
        e.ChargerStarted(sid, "start", 0),
        *(e.MeterValue(sid, f"m{k}", 1000 * (k + 1)) for k in range(meter_values)),
        e.ChargerStopped(session_id=sid, event_id="stop", meter_wh=1000 * meter_values + 500),
    ]
    for ev in events:
        now[0] += timedelta(seconds=30)
        handled = host.handle(ev)
    capture = next(x for x in handled.commands if isinstance(x, c.Capture))
    done = host.handle(
        e.TerminalResultArrived(
            session_id=sid,
            event_id="cap",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=capture.amount_minor,
            ref=refs[1],
        )
    )
    return done, len(events) + 2


def steps_rate(
    sessions: int, meter_values: int, directory: Path | None = None
) -> tuple[float, float, int]:
    """(durable steps/s, CPU ms per step, database bytes) for ``sessions`` sessions."""
    now = [datetime(2026, 1, 5, 8, tzinfo=UTC)]
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        store = Store.open(Path(tmp) / "bench.sqlite3", clock=lambda: now[0])
        host = EngineHost(store, policy(), lambda: now[0])
        steps = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(sessions):
            _, count = one_session(
                host, now, f"bench-{i:06d}", "T1", meter_values, (str(i % 9999 + 1), "1")
            )
            steps += count
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        assert all(s["final"] for s in store.sessions(limit=sessions))
        size = (Path(tmp) / "bench.sqlite3").stat().st_size
        store.close()
    return steps / wall, 1000 * cpu / steps, size


def raw_commit_rate(seconds: float, directory: Path | None = None) -> float:
    """The anchor: single-row SQLite commits/s, WAL and synchronous=FULL, on the same disk."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        conn = sqlite3.connect(Path(tmp) / "raw.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        row = "x" * 200
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (data) VALUES (?)", (row,))
            conn.execute("COMMIT")
            n += 1
        rate = n / (time.perf_counter() - start)
        conn.close()
    return rate


def figures(sessions: int, rounds: int = 3, directory: Path | None = None) -> dict[str, float]:
    """Median of interleaved rounds: the raw commit loop, then the engine, in turns."""
    raws, engines, cpus = [], [], []
    for _ in range(rounds):
        raws.append(raw_commit_rate(1.0, directory))
        rate, cpu, _size = steps_rate(sessions, 10, directory)
        engines.append(rate)
        cpus.append(cpu)
    return {
        "raw": statistics.median(raws),
        "engine": statistics.median(engines),
        "cpu_ms": statistics.median(cpus),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--meter-values", type=int, default=10)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the database goes (default: a temp dir)"
    )
    args = parser.parse_args()
    raw = raw_commit_rate(2.0, args.dir)
    rate, cpu, size = steps_rate(args.sessions, args.meter_values, args.dir)
    steps = args.sessions * (args.meter_values + 5)
    print(f"engine: {args.sessions} sessions, {steps} durable steps")
    per_session = rate / (args.meter_values + 5)
    print(
        f"  {rate:,.0f} steps/s   {per_session:,.1f} sessions/s   {1000 / rate:.2f} ms/step wall   "
        f"{cpu:.2f} ms/step CPU"
    )
    print(
        f"  raw single-row commits on the same disk: {raw:,.0f}/s: the engine is at "
        f"{rate / raw:.0%}"
    )
    print(f"  database {size / 1e6:.1f} MB after the run (before checkpoint of the WAL)")


if __name__ == "__main__":
    main()
