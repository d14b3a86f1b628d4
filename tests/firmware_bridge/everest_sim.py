"""EVerest's side of its MQTT API, played on the broker for the tests: an EVSE manager that
reports a plug-in, starts a transaction when a prevalidated token for its connector arrives,
publishes power meter values, and finishes the transaction (at the planned energy, or when the
gateway asks it to stop). It also records the gateway's communication checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from firmware_bridge.link import BrokerSettings

BASE = "everest_api/1"


class EverestSimulator:
    def __init__(
        self, broker: BrokerSettings, module: str, energy_wh: int = 6_000, step_wh: int = 1_000
    ) -> None:
        self.broker, self.module = broker, module
        self.energy_wh, self.step_wh = energy_wh, step_wh
        self.tokens: list[dict[str, Any]] = []
        self.stops: list[dict[str, Any]] = []
        self.checks = 0
        self.ready = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._stop = asyncio.Event()
        self._charge: asyncio.Task[None] | None = None
        self._session = ""

    async def run(self, stopping: asyncio.Event) -> None:
        b = self.broker
        async with aiomqtt.Client(
            b.host,
            b.port,
            identifier=f"everest-sim-{uuid.uuid4().hex[:6]}",
            username=b.username,
            password=b.password,
        ) as client:
            self._client = client
            await client.subscribe(f"{BASE}/auth_token_provider/+/m2e/#", qos=1)
            await client.subscribe(f"{BASE}/evse_manager_consumer/{self.module}/m2e/#", qos=1)
            await client.subscribe(f"{BASE}/auth_consumer/+/m2e/#", qos=1)
            self.ready.set()
            reader = asyncio.create_task(self._read(client))
            try:
                await stopping.wait()
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await reader
                if self._charge is not None:
                    self._charge.cancel()

    async def _event(self, event: str, **data: Any) -> None:
        assert self._client is not None
        body = {"uuid": self._session, "event": event, "timestamp": _now(), **data}
        await self._client.publish(
            f"{BASE}/evse_manager_consumer/{self.module}/e2m/session_event",
            json.dumps(body).encode(),
            qos=1,
        )

    async def plug_in(self) -> None:
        self._session = uuid.uuid4().hex
        await self._event(
            "SessionStarted",
            session_started={"reason": "EVConnected", "meter_value": _meter(100_000)},
        )

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = json.loads(message.payload) if isinstance(message.payload, bytes) else None
            if topic.endswith("/m2e/communication_check"):
                self.checks += 1
            elif topic.endswith("/m2e/provided_token"):
                self.tokens.append(payload)
                if payload["authorization_type"] == "BankCard" and payload.get("prevalidated"):
                    self._stop.clear()
                    self._charge = asyncio.create_task(self._transaction(payload))
            elif topic.endswith("/m2e/stop_transaction"):
                self.stops.append(payload)
                self._stop.set()

    async def _transaction(self, token: dict[str, Any]) -> None:
        assert self._client is not None
        meter = 100_000
        await self._event(
            "TransactionStarted",
            transaction_started={"id_tag": token, "meter_value": _meter(meter)},
        )
        delivered = 0
        while delivered < self.energy_wh and not self._stop.is_set():
            await asyncio.sleep(0.05)
            delivered += self.step_wh
            meter += self.step_wh
            await self._client.publish(
                f"{BASE}/evse_manager_consumer/{self.module}/e2m/powermeter",
                json.dumps(_meter(meter)).encode(),
                qos=1,
            )
        await self._event(
            "TransactionFinished",
            transaction_finished={
                "meter_value": _meter(meter),
                "reason": "Remote" if self._stop.is_set() else "EVDisconnected",
            },
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _meter(wh: int) -> dict[str, Any]:
    return {"timestamp": _now(), "energy_Wh_import": {"total": wh}}
