"""Restart to READY with many finished sessions, against the same config on an empty database.

    python bench/restart.py [--sessions 100000] [--rounds 3]

A real `evpay run` (engine, simulated charger, a terminal on `evpay simulate terminal`) under a
fake systemd NOTIFY_SOCKET; the time is from spawning the process to READY=1. The finished
sessions are copies of one session run through the real engine (its session row, payment rows,
journal entries and outcome message), each under its own id, written in large steps. Each side
starts after a clean stop, as a restart does. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine import one_session
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.payment_rows import payment_rows
from gateway.store import JournalEntry, OutboxMessage, PaymentRecord, SessionRecord, Step, Store
from tests.helpers import free_port
from tests.payments.fixtures import policy
from tests.site_rig import site_toml


def template(
    tmp: Path,
) -> tuple[dict[str, object], list[PaymentRecord], list[JournalEntry], dict[str, object]]:
    """One session through the real engine: its stored record, payments, journal and outcome."""
    now = [datetime(2026, 1, 5, 8, tzinfo=UTC)]
    store = Store.open(tmp / "template.sqlite3", clock=lambda: now[0])
    host = EngineHost(store, policy(), lambda: now[0])
    sid = "TEMPLATE"
    done, _ = one_session(host, now, sid, "t1", 10, ("7", "8"))
    assert done.session is not None
    row = store.session(sid)
    assert row is not None
    journal = [
        JournalEntry(j.get("entity", "session"), sid, j["kind"], j["data"])
        for j in store.journal(sid)
    ]
    outcome = next(m.payload for m in store.outbox.list() if m.kind == "session.outcome")
    payments = payment_rows(done.session)
    store.close()
    return row["data"], payments, journal, dict(outcome)


def fill(db: Path, sessions: int, tmp: Path) -> None:
    data, payments, journal, outcome = template(tmp)
    text = {"data": json.dumps(data), "outcome": json.dumps(outcome)}
    store = Store.open(db)
    batch = 500
    for start in range(0, sessions, batch):
        records, pays, entries, outbox = [], [], [], []
        for n in range(start, min(start + batch, sessions)):
            sid = f"S{n:07d}"
            records.append(
                SessionRecord(
                    sid,
                    "completed",
                    json.loads(text["data"].replace("TEMPLATE", sid)),
                    final=True,
                    terminal="t1",
                )
            )
            pays += [
                PaymentRecord(
                    p.id.replace("TEMPLATE", sid),
                    sid,
                    p.kind,
                    p.state,
                    p.amount_minor,
                    p.currency,
                    p.data,
                )
                for p in payments
            ]
            entries += [JournalEntry(j.entity, sid, j.kind, j.data) for j in journal]
            payload = json.loads(text["outcome"].replace("TEMPLATE", sid))
            outbox.append(
                OutboxMessage(f"{sid}:outcome", f"session:{sid}", "session.outcome", payload)
            )
        store.apply(
            Step(f"fill-{start}", sessions=records, payments=pays, journal=entries, outbox=outbox)
        )
    store._conn.execute(
        "UPDATE outbox SET status = 'done', done_at = created_at"
    )  # delivered long ago
    store.checkpoint()
    store.close()


def time_to_ready(config: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(Path(tmp) / "notify.sock"))
        notify.settimeout(60)
        env = {**os.environ, "NOTIFY_SOCKET": str(Path(tmp) / "notify.sock")}
        start = time.perf_counter()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while b"READY=1" not in notify.recv(4096):
                pass
            ready = time.perf_counter() - start
        finally:
            daemon.terminate()
            code = daemon.wait(timeout=30)
            notify.close()
        if code != 0:
            raise SystemExit(f"the daemon did not stop cleanly (exit {code})")
        return ready


def figures(sessions: int, rounds: int) -> dict[str, float]:
    terminal_port = free_port()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "terminal",
            "--listen",
            f"tcp://127.0.0.1:{terminal_port}",
            "--password-env",
            "BENCH_PT",
        ],
        env={**os.environ, "BENCH_PT": "123456"},
        stdout=subprocess.DEVNULL,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            configs = {}
            for name in ("empty", "full"):
                (base / name).mkdir()
                configs[name] = base / name / "gateway.toml"
                text = site_toml(
                    base / name / "evpay.sqlite3",
                    {"t1": f"tcp://127.0.0.1:{terminal_port}"},
                    site="BENCH",
                    evses={"E1": "t1"},
                    extra="[daemon]\nshutdown_grace_s = 3.0\n",
                )
                configs[name].write_text(text, encoding="utf-8")
            t0 = time.perf_counter()
            fill(base / "full" / "evpay.sqlite3", sessions, base)
            filled = time.perf_counter() - t0
            size = (base / "full" / "evpay.sqlite3").stat().st_size
            time.sleep(0.5)  # the simulator is listening
            runs: dict[str, list[float]] = {"empty": [], "full": []}
            for _ in range(rounds):
                for name in ("empty", "full"):
                    runs[name].append(time_to_ready(configs[name]))
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    return {
        "empty_s": statistics.median(runs["empty"]),
        "full_s": statistics.median(runs["full"]),
        "fill_s": filled,
        "db_bytes": size,
        "sessions": sessions,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    got = figures(args.sessions, args.rounds)
    each = got["db_bytes"] / args.sessions / 1024
    print(
        f"database of {args.sessions:,} finished sessions: {got['db_bytes'] / 1e6:,.0f} MB "
        f"({each:.1f} KiB a session), written in {got['fill_s']:.0f} s"
    )
    print(
        f"restart to READY: empty {got['empty_s']:.2f} s, with the sessions {got['full_s']:.2f} s "
        f"({got['full_s'] / got['empty_s']:.2f}x)"
    )


if __name__ == "__main__":
    main()
