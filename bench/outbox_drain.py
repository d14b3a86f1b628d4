"""Drain a backlog of session outcomes to the embedded CPO on loopback.

    python bench/outbox_drain.py [--messages 100000] [--concurrency 8]

The CPO runs in its own process (`evpay simulate cpo`), so the CPU time printed is the
gateway's own: store reads and writes, FAC mapping, HTTP. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.ocpi.client import OcpiClient
from gateway.ocpi.pusher import OutboxPusher
from gateway.store import OutboxMessage, Step, Store


def fill(store: Store, n: int) -> None:
    batch: list[OutboxMessage] = []
    for i in range(n):
        sid = f"bench-{i:07d}"
        payload = {"session_id": sid, "authorization_reference": f"EVP-{sid}", "state": "completed",
                   "currency": "EUR", "captured_minor": 1169, "price_minor": 1169, "price_excl": "9.82",
                   "receipt_no": i % 9999 + 1, "card": {"brand": "MasterCard", "masked_pan": "541333******0074"},
                   "notes": []}  # fmt: skip
        batch.append(OutboxMessage(f"{sid}:outcome", f"session:{sid}", "session.outcome", payload))
        if len(batch) == 1000:
            store.apply(Step(f"fill-{i}", outbox=batch))
            batch = []
    if batch:
        store.apply(Step("fill-last", outbox=batch))


async def drain(store: Store, versions_url: str, concurrency: int) -> int:
    payments_url = versions_url.replace("/ocpi/versions", "/ocpi/cpo/2.3.0/payments")
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        pusher = OutboxPusher(store, OcpiClient(http, "bench-token"), payments_url, lambda: datetime.now(UTC),
                              concurrency=concurrency)  # fmt: skip
        await pusher.drain()
        return pusher.delivered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    env = {**os.environ, "EVPAY_BENCH_TOKEN": "bench-token"}
    command = [sys.executable, "-m", "gateway.cli", "simulate", "cpo", "--listen", "127.0.0.1:0",
               "--accept-token-env", "EVPAY_BENCH_TOKEN"]  # fmt: skip
    cpo = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert cpo.stdout is not None
        versions_url = re.search(r"versions (\S+)", cpo.stdout.readline()).group(1)  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "bench.sqlite3")
            t0 = time.perf_counter()
            fill(store, args.messages)
            print(f"backlog of {args.messages:,} outcome messages written in {time.perf_counter() - t0:.1f} s")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            delivered = asyncio.run(drain(store, versions_url, args.concurrency))
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            backlog = store.outbox.backlog()
            print(f"drained {delivered:,} messages in {wall:.1f} s: {delivered / wall:,.0f} messages/s, "
                  f"gateway CPU {1000 * cpu / max(delivered, 1):.2f} ms/message "
                  f"(concurrency {args.concurrency}); left pending {backlog.pending}, dead {backlog.dead}")  # fmt: skip
            store.close()
    finally:
        cpo.terminate()
        out, _ = cpo.communicate(timeout=30)
        print(out.strip())


if __name__ == "__main__":
    main()
