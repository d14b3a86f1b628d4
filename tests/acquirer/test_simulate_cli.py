"""``evpay simulate acquirer`` as a user runs it: a separate process on loopback, its signed
webhooks received by our receiver into a real store."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from drivers.money import Money
from gateway.acquirer.adyen_client import AdyenAcquirer
from gateway.acquirer.forwarding import Forwarder
from gateway.acquirer.port import Modification
from gateway.store import Store
from tests.acquirer.rig import (
    API_KEY,
    HMAC_KEY,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    Clock,
    acquirer_settings,
    receiver,
    serving,
)
from tests.helpers import EVPAY, subprocess_env


async def test_simulate_acquirer_plays_modifications_and_duplicated_webhooks(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    root = web.Application()
    path = receiver(store, clock).mount(root)
    async with serving(root) as port:
        env = subprocess_env(
            EVPAY_ADYEN_API_KEY=API_KEY,
            EVPAY_ADYEN_HMAC_KEY=HMAC_KEY,
            EVPAY_ADYEN_WEBHOOK_PASSWORD=WEBHOOK_PASSWORD,
        )
        proc = await asyncio.create_subprocess_exec(
            *EVPAY,
            "simulate",
            "acquirer",
            "--listen",
            "127.0.0.1:0",
            "--webhook",
            f"http://127.0.0.1:{port}{path}",
            "--webhook-user",
            WEBHOOK_USER,
            "--merchant-account",
            "EVPayTest",
            "--variant",
            "duplicate",
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            base = line.strip().rsplit(" ", 1)[-1]
            assert base.startswith("http://127.0.0.1:") and base.endswith("/v71")
            async with aiohttp.ClientSession() as session:
                acquirer = AdyenAcquirer("adyen", acquirer_settings(base), session)
                forwarder = Forwarder(
                    store.acquirer, acquirer, clock, webhook_deadline=timedelta(hours=1)
                )
                forwarder.submit(
                    Modification("s1/refund", "refund", "8815000000000042", amount=Money(99, "EUR"))
                )
                assert (await forwarder.drain()).received == 1
            for _ in range(100):
                stored = store.acquirer.get("s1/refund")
                notes = store.acquirer.notifications("adyen")
                if stored and stored.status == "confirmed" and notes and notes[0]["repeats"]:
                    break
                await asyncio.sleep(0.05)
            assert stored is not None and stored.status == "confirmed"
            assert notes[0]["event_code"] == "REFUND" and notes[0]["repeats"] == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    assert b"1 modifications applied, 2 webhooks accepted" in out
    store.close()
