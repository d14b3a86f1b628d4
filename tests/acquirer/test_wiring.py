"""The receiver as the daemon mounts it: built from [acquirers] and served by the upstream
worker on its OCPI listener, beside the OCPI endpoints."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from cryptography.fernet import Fernet

from gateway.acquirer.webhook_server import webhook_receivers
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.ocpi.worker import UpstreamWorker
from gateway.settings import parse_settings
from gateway.store import Store
from tests.acquirer.rig import HMAC_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER
from tests.acquirer.test_webhook_receiver import AUTH, body
from tests.helpers import free_port


async def test_the_upstream_worker_serves_the_configured_webhook_receiver(tmp_path: Path) -> None:
    cpo = CpoSimulator()
    await cpo.start()
    port = free_port()
    settings = parse_settings(
        f"""
[site]
id = "S1"
country = "DE"

[upstream]
enabled = true
allow_insecure_http = true
versions_url = "{cpo.versions_url}"
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/ocpi/versions"
token_a = {{ value = "{cpo.state.token_a}" }}
key = {{ value = "{Fernet.generate_key().decode()}" }}

[acquirers.adyen]
base_url = "https://checkout-test.adyen.com/v71"
merchant_account = "EVPayTest"
api_key = {{ value = "key" }}
hmac_key = {{ value = "{HMAC_KEY}" }}
webhook_username = "{WEBHOOK_USER}"
webhook_password = {{ value = "{WEBHOOK_PASSWORD}" }}
""",
        "<test>",
    )
    store = Store.open(tmp_path / "w.sqlite3")
    clock = lambda: datetime.now(UTC)  # noqa: E731
    worker = UpstreamWorker(
        settings.upstream,
        "S1",
        store,
        clock,
        webhooks=webhook_receivers(settings, store, clock),
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    url = f"http://127.0.0.1:{port}/acquirer/adyen/notifications"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(10):
            while True:
                try:
                    async with http.post(
                        url,
                        data=body(),
                        headers={"Authorization": AUTH, "Content-Type": "application/json"},
                    ) as reply:
                        answer = (reply.status, await reply.text())
                        break
                except aiohttp.ClientConnectionError:  # the listener may not be up yet
                    await asyncio.sleep(0.05)
        assert answer == (200, "[accepted]")
        assert len(store.acquirer.notifications("adyen")) == 1
    finally:
        stopping.set()
        await task
        store.close()
        await cpo.stop()
