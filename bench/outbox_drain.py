"""Drain a backlog of session outcomes to the embedded CPO on loopback, against a bare client.

    python bench/outbox_drain.py [--messages 20000] [--concurrency 8]

The CPO runs in its own process (`evpay simulate cpo`), so the CPU time printed is the
gateway's own: store reads and writes, FAC mapping, HTTP. The anchor is a bare aiohttp client
POSTing the same FAC bodies (built beforehand) to the same server with the same concurrency,
as a continuous pool: what the wire and the server allow. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.ocpi.client import OcpiClient, authorization
from gateway.ocpi.fac import fac_from_outcome
from gateway.ocpi.pusher import OutboxPusher
from gateway.store import OutboxMessage, Step, Store

TOKEN = "bench-token"  # noqa: S105 - the embedded CPO's test token, on loopback


def outcome(sid: str, n: int) -> dict[str, Any]:
    return {
        "session_id": sid,
        "authorization_reference": f"EVP-{sid}",
        "state": "completed",
        "currency": "EUR",
        "captured_minor": 1169,
        "price_minor": 1169,
        "price_excl": "9.82",
        "ref": n % 9999 + 1,
        "card": {"brand": "MasterCard", "masked_pan": "541333******0074"},
        "notes": [],
    }


@contextmanager
def embedded_cpo() -> Iterator[str]:
    """The embedded CPO in its own process; yields its payments URL."""
    env = {**os.environ, "EVPAY_BENCH_TOKEN": TOKEN}
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "simulate",
        "cpo",
        "--listen",
        "127.0.0.1:0",
        "--accept-token-env",
        "EVPAY_BENCH_TOKEN",
    ]
    cpo = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert cpo.stdout is not None
        announced = re.search(r"versions (\S+)", cpo.stdout.readline())
        assert announced is not None, "the CPO simulator did not say its versions URL"
        versions_url = announced.group(1)
        yield versions_url.replace("/ocpi/versions", "/ocpi/cpo/2.3.0/payments")
    finally:
        cpo.terminate()
        cpo.communicate(timeout=30)


def fill(store: Store, n: int, prefix: str) -> None:
    batch: list[OutboxMessage] = []
    for i in range(n):
        sid = f"{prefix}-{i:07d}"
        batch.append(
            OutboxMessage(f"{sid}:outcome", f"session:{sid}", "session.outcome", outcome(sid, i))
        )
        if len(batch) == 1000:
            store.apply(Step(f"fill-{prefix}-{i}", outbox=batch))
            batch = []
    if batch:
        store.apply(Step(f"fill-{prefix}-last", outbox=batch))


def gateway_rate(payments_url: str, n: int, concurrency: int, prefix: str) -> tuple[float, float]:
    """(messages/s, gateway CPU ms per message) draining ``n`` outcomes through the pusher."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.sqlite3")
        fill(store, n, prefix)

        async def drain() -> int:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency * 2)
            ) as http:
                pusher = OutboxPusher(
                    store,
                    OcpiClient(http, TOKEN),
                    payments_url,
                    lambda: datetime.now(UTC),
                    concurrency=concurrency,
                )
                await pusher.drain()
                return pusher.delivered

        cpu0, wall0 = time.process_time(), time.perf_counter()
        delivered = asyncio.run(drain())
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        backlog = store.outbox.backlog()
        store.close()
    if delivered != n or backlog.pending or backlog.dead:
        left = f"{backlog.pending} pending, {backlog.dead} dead"
        raise SystemExit(f"drain incomplete: {delivered} of {n} delivered, {left}")
    return delivered / wall, 1000 * cpu / delivered


def anchor_rate(payments_url: str, n: int, concurrency: int, prefix: str) -> float:
    """Messages/s of a bare aiohttp client POSTing the same FAC bodies, ``concurrency`` at a
    time."""
    url = f"{payments_url}/financial-advice-confirmations"
    now = datetime.now(UTC)
    bodies = []
    for i in range(n):
        fac = fac_from_outcome(outcome(f"{prefix}-{i:07d}", i), now)
        assert fac is not None
        bodies.append(fac.to_json())

    async def post_all() -> None:
        todo = iter(bodies)
        headers = {"Authorization": authorization(TOKEN)}
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency * 2)
        ) as http:

            async def worker() -> None:
                for body in todo:
                    ids = {
                        "X-Request-ID": uuid.uuid4().hex,
                        "X-Correlation-ID": uuid.uuid4().hex,
                    }  # OCPI asks both
                    async with http.post(url, json=body, headers={**headers, **ids}) as resp:
                        await resp.text()
                        if resp.status not in (200, 201):
                            raise SystemExit(f"the CPO answered {resp.status}")

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    start = time.perf_counter()
    asyncio.run(post_all())
    return n / (time.perf_counter() - start)


def figures(messages: int, concurrency: int, rounds: int = 3) -> dict[str, float]:
    """Median of interleaved rounds, each side against a fresh CPO process (the embedded CPO
    slows as it stores more FACs, so sharing one would favour whichever ran first)."""
    anchors, drains, cpus = [], [], []
    for r in range(rounds):
        with embedded_cpo() as url:
            anchors.append(anchor_rate(url, messages, concurrency, f"anchor{r}"))
        with embedded_cpo() as url:
            rate, cpu = gateway_rate(url, messages, concurrency, f"drain{r}")
            drains.append(rate)
            cpus.append(cpu)
    return {
        "anchor": statistics.median(anchors),
        "drain": statistics.median(drains),
        "cpu_ms": statistics.median(cpus),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    got = figures(args.messages, args.concurrency, args.rounds)
    print(
        f"bare aiohttp client: {got['anchor']:,.0f} POSTs/s (concurrency {args.concurrency}, "
        f"{args.messages:,} each)"
    )
    print(
        f"outbox drain:        {got['drain']:,.0f} messages/s, gateway CPU {got['cpu_ms']:.2f} "
        f"ms/message, "
        f"{got['drain'] / got['anchor']:.0%} of the bare client"
    )


if __name__ == "__main__":
    main()
