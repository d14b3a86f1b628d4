"""A loopback rig: the simulated Adyen, our webhook receiver on a real aiohttp server, a real
SQLite store, the Adyen acquirer and its forwarder. Only time is fake (deadlines)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from gateway.acquirer.adyen_client import AdyenAcquirer
from gateway.acquirer.adyen_webhook import hmac_key_bytes, signed_item
from gateway.acquirer.forwarding import Forwarder
from gateway.acquirer.profiles import profile
from gateway.acquirer.sim import AdyenSimulator, SimState
from gateway.acquirer.webhook_server import WebhookReceiver
from gateway.settings import AcquirerSettings, SecretRef
from gateway.store import Store
from tests.helpers import free_port


class WithAcquirer(Protocol):
    """A rig with the simulated acquirer (``test_e2e_acquirer.Rig``)."""

    adyen: AdyenSimulator


HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
API_KEY = "test-api-key-0123456789"
WEBHOOK_USER = "adyen-webhooks"
WEBHOOK_PASSWORD = "webhook-password-0123"
DEADLINE = timedelta(minutes=30)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    store: Store
    sim: AdyenSimulator
    acquirer: AdyenAcquirer
    forwarder: Forwarder
    clock: Clock
    webhook_url: str
    sim_port: int

    def status(self, key: str) -> str:
        found = self.store.acquirer.get(key)
        assert found is not None
        return found.status


def acquirer_settings(base_url: str) -> AcquirerSettings:
    return AcquirerSettings(
        base_url=base_url,
        merchant_account="EVPayTest",
        api_key=SecretRef(value=SecretStr(API_KEY)),
        hmac_key=SecretRef(value=SecretStr(HMAC_KEY)),
        webhook_username=WEBHOOK_USER,
        webhook_password=SecretRef(value=SecretStr(WEBHOOK_PASSWORD)),
        timeout_s=3.0,
    )


def receiver(store: Store, clock: Clock) -> WebhookReceiver:
    return WebhookReceiver(
        name="adyen",
        profile=profile("adyen"),
        book=store.acquirer,
        hmac_key=HMAC_KEY,
        merchant_account="EVPayTest",
        username=WEBHOOK_USER,
        password=WEBHOOK_PASSWORD,
        clock=clock,
    )


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert isinstance(site._server, asyncio.Server)
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        await runner.cleanup()


@asynccontextmanager
async def rig(
    tmp_path: Path, variants: Collection[str] = (), *, start_sim: bool = True
) -> AsyncIterator[Rig]:
    clock = Clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    root = web.Application()
    path = receiver(store, clock).mount(root)
    async with serving(root) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}{path}"
        sim_port = free_port()
        sim = AdyenSimulator(
            SimState(
                api_key=API_KEY,
                hmac_key=HMAC_KEY,
                merchant_account="EVPayTest",
                webhook_url=url,
                webhook_user=WEBHOOK_USER,
                webhook_password=WEBHOOK_PASSWORD,
                variants=set(variants),
                slow_s=0.5,
            )
        )
        if start_sim:
            await sim.start("127.0.0.1", sim_port)
        acquirer = AdyenAcquirer(
            "adyen", acquirer_settings(f"http://127.0.0.1:{sim_port}/v71"), session
        )
        forwarder = Forwarder(store.acquirer, acquirer, clock, webhook_deadline=DEADLINE)
        try:
            yield Rig(store, sim, acquirer, forwarder, clock, url, sim_port)
        finally:
            await sim.stop()
            store.close()


async def post_webhook(
    rig: WithAcquirer, code: str, applied: dict[str, Any], *, success: bool
) -> None:
    """A notification as Adyen sends it late (signed, Basic credentials)."""
    item = {
        "eventCode": code,
        "pspReference": applied["pspReference"],
        "originalReference": applied["payment"],
        "merchantAccountCode": "EVPayTest",
        "merchantReference": applied.get("reference") or "",
        "success": "true" if success else "false",
        "eventDate": datetime.now(UTC).isoformat(timespec="seconds"),
        "reason": "",
        "amount": applied["amount"],
    }
    payload = {
        "live": "false",
        "notificationItems": [
            {"NotificationRequestItem": signed_item(item, hmac_key_bytes(HMAC_KEY))}
        ],
    }
    user = base64.b64encode(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}".encode()).decode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            rig.adyen.state.webhook_url, json=payload, headers={"Authorization": f"Basic {user}"}
        ) as reply,
    ):
        assert (reply.status, await reply.text()) == (200, "[accepted]")
