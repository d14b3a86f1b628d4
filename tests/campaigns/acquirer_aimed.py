"""The acquirer crash campaign's parts outside the daemon that it aims with: the simulated
Adyen with handles (down, a request held, webhooks lost or not accepted, its ledger of what each
modification did to money), and the charger firmware that remembers which EV asked for payment
and got no answer (acquirer_crash.py's ``_replug``)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from firmware_bridge.link import BrokerSettings
from firmware_bridge.sim import ChargerSimulator, Plan
from gateway.acquirer.sim import AdyenSimulator, SimState


class AimedAdyen(AdyenSimulator):
    """The simulated acquirer with the campaign's handles (down, a request held, lost and
    unaccepted webhooks kept) and its ledger of what each modification did to money."""

    def __init__(self, state: SimState, chance: Callable[[], float]) -> None:
        super().__init__(state)
        self.chance = chance
        self.down = self.hold_next = self.losing = False  # 503s; hold a request; keep webhooks
        self.held = asyncio.Event()
        self.lost: list[tuple[float, list[dict[str, Any]]]] = []  # (when, the batch)
        self.unaccepted: list[dict[str, Any]] = []
        self.webhook_out = asyncio.Event()
        self.ledger: list[tuple[str, str, int, bool]] = []  # what, payment, minor, failed

    async def _apply(self, request: web.Request, what: str, psp: str | None) -> web.StreamResponse:
        if self.down:
            return web.json_response({"status": 503, "message": "down"}, status=503)
        if not self.hold_next:
            return await super()._apply(request, what, psp)
        self.hold_next = False
        applied = self.chance() < 0.5  # the kill lands after the acquirer applied it, or before
        answer = await super()._apply(request, what, psp) if applied else None
        self.held.set()
        await asyncio.sleep(1.0)  # the daemon dies meanwhile: its answer is never read
        if answer is None:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        return answer

    def _webhooks(self, what: str, psp: str | None, body: dict[str, Any], answer: Any) -> None:
        failed = what == "captures" and "capture_failed" in self.state.variants
        payment = psp or str(body.get("paymentReference"))
        self.ledger.append((what, payment, int((body.get("amount") or {}).get("value", 0)), failed))
        super()._webhooks(what, psp, body, answer)

    async def _send_all(self, items: list[dict[str, Any]]) -> None:
        if self.losing:
            self.lost.append((time.monotonic(), items))
            return
        await super()._send_all(items)

    async def _deliver(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        self.webhook_out.set()
        given_up = self.state.webhooks_given_up
        await super()._deliver(session, payload)
        if self.state.webhooks_given_up > given_up:
            self.unaccepted.append(payload)

    async def redeliver(self) -> int:
        """Adyen's retry: every webhook the daemon did not accept, sent again."""
        payloads, self.unaccepted = self.unaccepted, []
        user = f"{self.state.webhook_user}:{self.state.webhook_password}".encode()
        auth = {"Authorization": "Basic " + base64.b64encode(user).decode()}
        async with aiohttp.ClientSession(headers=auth) as session:
            for payload in payloads:
                await self._deliver(session, payload)
        return len(payloads)

    async def deliver_late(self, older_s: float = 0.0) -> int:
        """The lost batches lost over ``older_s`` ago, delivered now (Adyen's late retry)."""
        now = time.monotonic()
        due = [items for when, items in self.lost if now - when > older_s]
        self.lost = [(when, items) for when, items in self.lost if now - when <= older_s]
        for items in due:
            await super()._send_all(items)
        return len(due)


class TappingCharger(ChargerSimulator):
    """The firmware simulator that remembers which EVs asked for payment and got no answer."""

    def __init__(self, settings: BrokerSettings, evses: list[str]) -> None:
        super().__init__(settings, evses)
        self.asking: dict[str, int] = {}  # evse -> its authorizations when it asked

    async def plug(
        self,
        evse: str,
        target_kwh: str | None = None,
        message_id: str | None = None,
        plan: Plan | None = None,
    ) -> str:
        self.asking[evse] = len(self.evses[evse].authorized)
        return await super().plug(evse, target_kwh, message_id, plan)

    async def ask_again(self, evse: str) -> None:
        await super().plug(evse)
