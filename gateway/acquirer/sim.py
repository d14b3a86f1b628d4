"""``evpay simulate acquirer``: Adyen's Checkout modifications and their signed webhooks, with
the behaviours a real acquirer shows.

Modifications are applied once per Idempotency-Key: a repeat gets the first answer again, as
Adyen does. Variants (each a set the test or the command line chooses):

- ``slow``: webhooks come ``slow_s`` late; ``duplicate``: every webhook is sent twice;
  ``lost``: no webhook at all; ``reorder``: a batch's webhooks go in reverse order.
- ``capture_failed``: a capture is received, then CAPTURE then CAPTURE_FAILED arrive.
- ``adjustment_declined``: an amount update is received, then its webhook says success=false.
- ``response_lost``: the first request of each key is applied, then the connection is dropped
  without an answer; the retry (same key) must not apply it again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from gateway.acquirer.adyen_webhook import hmac_key_bytes, signed_item

_LOGGER = logging.getLogger(__name__)
VARIANTS = (
    "slow",
    "duplicate",
    "lost",
    "reorder",
    "capture_failed",
    "adjustment_declined",
    "response_lost",
)
WEBHOOK_TRIES = 5  # a webhook not [accepted] is tried this often, then given up (as a finding)
_EVENTS = {
    "amountUpdates": "AUTHORISATION_ADJUSTMENT",
    "captures": "CAPTURE",
    "cancels": "CANCELLATION",
    "refunds": "REFUND",
}


@dataclass
class SimState:
    api_key: str
    hmac_key: str
    merchant_account: str
    webhook_url: str
    webhook_user: str
    webhook_password: str
    variants: set[str] = field(default_factory=set)
    slow_s: float = 1.0
    authorised: dict[str, int] = field(default_factory=dict)  # pspReference -> minor units
    applied: list[dict[str, Any]] = field(default_factory=list)  # each modification applied
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # by key
    dropped: set[str] = field(default_factory=set)  # keys whose first answer was "lost"
    webhooks_sent: int = 0
    webhooks_given_up: int = 0


class AdyenSimulator:
    def __init__(self, state: SimState) -> None:
        self.state = state
        self._psp = itertools.count(8815000000000001)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v71/payments/{psp}/{what}", self._modify)
        app.router.add_post("/v71/cancels", self._cancel_by_reference)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v71"

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()

    async def settle(self) -> None:
        """Wait until every webhook under way was sent (or given up)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- the Checkout API -------------------------------------------------------------------

    async def _modify(self, request: web.Request) -> web.StreamResponse:
        what = request.match_info["what"]
        if what not in _EVENTS:
            return _error(404, "000", f"unknown modification {what}")
        return await self._apply(request, what, request.match_info["psp"])

    async def _cancel_by_reference(self, request: web.Request) -> web.StreamResponse:
        return await self._apply(request, "technicalCancel", None)

    async def _apply(self, request: web.Request, what: str, psp: str | None) -> web.StreamResponse:
        if request.headers.get("X-API-Key") != self.state.api_key:
            return _error(401, "000", "HTTP Status Response - Unauthorized")
        key = request.headers.get("Idempotency-Key", "")
        if key and key in self.state.answers:
            status, answer = self.state.answers[key]
            return web.json_response(answer, status=status)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "702", "Structure of PaymentRequest contains a syntax error")
        if body.get("merchantAccount") != self.state.merchant_account:
            return _error(403, "901", "Invalid Merchant Account")
        amount = body.get("amount")
        ceiling = self.state.authorised.get(psp or "")
        if what == "captures" and ceiling is not None and int(amount["value"]) > ceiling:
            return _error(422, "137", "Invalid amount specified")
        status, answer = 201, self._answer(psp, body)
        if key:
            self.state.answers[key] = (status, answer)
        self.state.applied.append({"what": what, "payment": psp, "key": key, **answer})
        self._webhooks(what, psp, body, answer)
        if "response_lost" in self.state.variants and key not in self.state.dropped:
            self.state.dropped.add(key)
            if request.transport is not None:
                request.transport.abort()  # applied, but the answer never arrives
            return web.Response(status=201)
        return web.json_response(answer, status=status)

    def _answer(self, psp: str | None, body: dict[str, Any]) -> dict[str, Any]:
        answer = {
            "merchantAccount": self.state.merchant_account,
            "pspReference": str(next(self._psp)),
            "reference": body.get("reference"),
            "status": "received",
        }
        if psp is None:
            answer["paymentReference"] = body.get("paymentReference")
        else:
            answer["paymentPspReference"] = psp
        if "amount" in body:
            answer["amount"] = body["amount"]
        return answer

    # ---- webhooks ---------------------------------------------------------------------------

    def _webhooks(self, what: str, psp: str | None, body: dict[str, Any], answer: Any) -> None:
        if "lost" in self.state.variants:
            return
        event = _EVENTS.get(what, "TECHNICAL_CANCEL")
        item = {
            "eventCode": event,
            "pspReference": answer["pspReference"],
            "originalReference": psp or f"88{answer['pspReference'][2:]}",
            "merchantAccountCode": self.state.merchant_account,
            "merchantReference": body.get("reference", ""),
            "success": "true",
            "eventDate": datetime.now(UTC).isoformat(timespec="seconds"),
            "reason": "",
        }
        if "amount" in body:
            item["amount"] = body["amount"]
        items = [item]
        if what == "amountUpdates" and "adjustment_declined" in self.state.variants:
            item["success"], item["reason"] = "false", "Refused"
        if what == "captures" and "capture_failed" in self.state.variants:
            items.append({**item, "eventCode": "CAPTURE_FAILED", "reason": "Capture failed"})
        if "duplicate" in self.state.variants:
            items = [i for i in items for _ in (0, 1)]
        if "reorder" in self.state.variants:
            items.reverse()
        task = asyncio.create_task(self._send_all(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_all(self, items: list[dict[str, Any]]) -> None:
        if "slow" in self.state.variants:
            await asyncio.sleep(self.state.slow_s)
        key = hmac_key_bytes(self.state.hmac_key)
        user = f"{self.state.webhook_user}:{self.state.webhook_password}".encode()
        auth = {"Authorization": "Basic " + base64.b64encode(user).decode()}
        async with aiohttp.ClientSession(headers=auth) as session:
            for item in items:  # one item a request, as Adyen sends them
                payload = {
                    "live": "false",
                    "notificationItems": [{"NotificationRequestItem": signed_item(item, key)}],
                }
                await self._deliver(session, payload)

    async def _deliver(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        for attempt in range(WEBHOOK_TRIES):
            try:
                async with session.post(self.state.webhook_url, json=payload) as response:
                    text = await response.text()
                    if response.status == 200 and text == "[accepted]":
                        self.state.webhooks_sent += 1
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2 * (attempt + 1))
        self.state.webhooks_given_up += 1
        _LOGGER.warning("acquirer_sim.webhook_given_up")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"status": status, "errorCode": code, "message": message, "errorType": "validation"},
        status=status,
    )


async def serve(state: SimState, host: str, port: int, stop: asyncio.Event) -> None:
    """Run until ``stop``; what ``evpay simulate acquirer`` does."""
    sim = AdyenSimulator(state)
    await sim.start(host, port)
    print(f"simulated Adyen Checkout API at http://{host}:{sim.port}/v71", flush=True)  # noqa: T201
    await stop.wait()
    await sim.stop()
    print(  # noqa: T201
        f"simulated acquirer: {len(state.applied)} modifications applied, "
        f"{state.webhooks_sent} webhooks accepted, {state.webhooks_given_up} given up",
        flush=True,
    )
