"""The webhook receiver on real loopback HTTP: credentials, signature, strictness, the store
written before ``[accepted]`` (a killed process keeps what it acknowledged), never a 500."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.acquirer.adyen_webhook import hmac_key_bytes, signed_item
from gateway.ocpi.server import PtpServer
from gateway.store import Store
from tests.acquirer.rig import HMAC_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER, Clock, receiver, serving
from tests.helpers import subprocess_env

ITEM = {
    "eventCode": "REFUND",
    "pspReference": "8815000000000077",
    "originalReference": "8815000000000042",
    "merchantAccountCode": "EVPayTest",
    "merchantReference": "s9/refund",
    "amount": {"value": 500, "currency": "EUR"},
    "success": "true",
    "eventDate": "2026-12-07T12:00:00+01:00",
}
AUTH = "Basic " + base64.b64encode(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}".encode()).decode()


def body(item: dict[str, Any] = ITEM, key: str = HMAC_KEY) -> bytes:
    signed = signed_item(item, hmac_key_bytes(key))
    return json.dumps(
        {"live": "false", "notificationItems": [{"NotificationRequestItem": signed}]}
    ).encode()


async def post(
    url: str, data: bytes, auth: str = AUTH, kind: str = "application/json"
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers={"Authorization": auth, "Content-Type": kind}) as r,
    ):
        return r.status, await r.text()


async def test_refuses_what_is_not_authentic_or_well_formed(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "evpay.sqlite3")
    root = web.Application()
    path = receiver(store, Clock()).mount(root)
    async with serving(root) as port:
        url = f"http://127.0.0.1:{port}{path}"
        assert (await post(url, body(), auth="Basic eDp5"))[0] == 401
        assert (await post(url, body(), auth=""))[0] == 401
        assert (await post(url, body(), kind="text/plain"))[0] == 415
        assert (await post(url, b"{not json"))[0] == 400
        status, text = await post(url, body(key="11" * 32))
        assert status == 400 and "signature" in text
        assert store.acquirer.notifications("adyen") == []
        assert await post(url, body()) == (200, "[accepted]")
        assert await post(url, body()) == (200, "[accepted]")  # a repeat: accepted, stored once
        (note,) = store.acquirer.notifications("adyen")
        assert note["repeats"] == 1 and note["command_key"] is None  # unmatched, kept
        store.close()  # the store can no longer write: 503, never [accepted], never a 500
        status, text = await post(url, body({**ITEM, "pspReference": "8815000000000078"}))
        assert status == 503 and "send it again" in text


async def test_mounted_on_the_ocpi_server_beside_its_token_auth(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "evpay.sqlite3")
    clock = Clock()
    ocpi = PtpServer(store, "token-b-0123456789", "http://127.0.0.1", "SITE", clock)
    app = ocpi.app()
    path = receiver(store, clock).mount(app)
    async with serving(app) as port, aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/ocpi/versions") as r:
            assert r.status == 401  # OCPI still wants its token
        assert await post(f"http://127.0.0.1:{port}{path}", body()) == (200, "[accepted]")
        status, _ = await post(
            f"http://127.0.0.1:{port}{path}", body(), auth="Token token-b-0123456789"
        )
        assert status == 401  # an OCPI token is no webhook credential
    assert len(store.acquirer.notifications("adyen")) == 1
    store.close()


async def test_an_accepted_notification_survives_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "evpay.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.acquirer.webhook_proc", str(path)],
        stdout=subprocess.PIPE,
        env=subprocess_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert await post(url, body()) == (200, "[accepted]")
        os.kill(proc.pid, signal.SIGKILL)  # at once: no shutdown, no flush
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store.open(path, clock=lambda: datetime.now(UTC))
    (note,) = store.acquirer.notifications("adyen")
    assert note["event_code"] == "REFUND" and note["psp_reference"] == "8815000000000077"
    store.close()
    # restarted, Adyen sends it again (it never saw our answer): accepted, stored once
    again = subprocess.Popen(
        [sys.executable, "-m", "tests.acquirer.webhook_proc", str(path)],
        stdout=subprocess.PIPE,
        env=subprocess_env(),
        text=True,
    )
    try:
        assert again.stdout is not None
        assert await post(again.stdout.readline().strip(), body()) == (200, "[accepted]")
    finally:
        again.terminate()
        again.wait(timeout=10)
    store = Store.open(path, clock=lambda: datetime.now(UTC))
    (note,) = store.acquirer.notifications("adyen")
    assert note["repeats"] == 1
    store.close()
