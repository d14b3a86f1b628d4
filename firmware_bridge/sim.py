"""A charger simulator that speaks our topic contract on a real broker: one or many EVSEs that
plug in, wait for the gateway's ``authorize``, charge at a power with meter values every few
seconds, and stop (at the planned energy, or when told). Used by ``evpay simulate charger``,
the tests and the benchmark.

Like firmware should, it speaks in its own topic tree (its broker user name, ``settings.username``)
and obeys only a command that is neither retained (the gateway never retains one: a retained
command was left by someone else) nor past its ``expires``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt

from firmware_bridge import contract as m
from firmware_bridge.link import BrokerSettings

_LOGGER = logging.getLogger(__name__)


@dataclass(slots=True)
class Plan:
    energy_wh: int = 8_000
    step_wh: int = 2_000
    interval_s: float = 0.05
    meter_start_wh: int = 100_000
    fault_after_wh: int | None = None
    never_start: bool = False  # the EV never draws: the charger ignores the authorization


@dataclass(slots=True)
class EvseState:
    plan: Plan = field(default_factory=Plan)
    session_id: str = ""
    meter_wh: int = 0
    charging: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    authorized: list[dict[str, object]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    displayed: list[dict[str, object]] = field(default_factory=list)  # what its screen showed
    seq: int = 0  # the last meter message's sequence number
    state_requests: int = 0  # how often the gateway asked for its state


class ChargerSimulator:
    def __init__(
        self, settings: BrokerSettings, evses: list[str], plan: Plan | None = None
    ) -> None:
        self.settings = settings
        self.evses = {evse: EvseState(plan or Plan()) for evse in evses}
        self.gateway_status: list[str] = []
        self.charger = settings.username or m.DEFAULT_CHARGER  # its topic tree
        self.ignored: list[str] = []  # commands not obeyed (retained, expired), by id
        self._client: aiomqtt.Client | None = None
        self.ready = asyncio.Event()
        self._seen: set[str] = (
            set()
        )  # ids of the gateway's messages taken (a redelivery is ignored)
        self._identity = f"evpay-charger-sim-{uuid.uuid4().hex[:6]}"

    async def run(self, stopping: asyncio.Event) -> None:
        """Connected until stopped; reconnects (a persistent session: what the gateway sent
        meanwhile is delivered) like real firmware does."""
        while not stopping.is_set():
            try:
                await self._connected(stopping)
            except aiomqtt.MqttError:
                self.ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await stopping.wait()
        for state in self.evses.values():
            if state.charging is not None:
                state.charging.cancel()

    async def _connected(self, stopping: asyncio.Event) -> None:
        s = self.settings
        async with aiomqtt.Client(
            s.host,
            s.port,
            identifier=self._identity,
            username=s.username,
            password=s.password,
            clean_session=False,
        ) as client:
            self._client = client
            await client.subscribe(m.topic(s.prefix, self.charger, "+", "authorize"), qos=1)
            await client.subscribe(m.topic(s.prefix, self.charger, "+", "stop"), qos=1)
            await client.subscribe(m.topic(s.prefix, self.charger, "+", "state"), qos=1)
            await client.subscribe(m.topic(s.prefix, self.charger, "+", "display"), qos=1)
            await client.subscribe(m.status_topic(s.prefix), qos=1)
            self.ready.set()
            reader = asyncio.create_task(self._read(client))
            stop = asyncio.create_task(stopping.wait())
            try:
                done, _ = await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    reader.result()
            finally:
                self._client = None
                reader.cancel()
                stop.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await reader

    async def publish(self, evse: str, name: str, payload: dict[str, object] | bytes) -> None:
        """Publish one charger message (raw bytes too: the tests send malformed ones); while the
        broker is away, wait for it (the firmware keeps its messages)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        while True:
            await self.ready.wait()
            client = self._client
            if client is None:
                await asyncio.sleep(0.05)
                continue
            try:
                topic = m.topic(self.settings.prefix, self.charger, evse, name)
                await client.publish(topic, body, qos=1)
            except aiomqtt.MqttError:
                # The connection broke (or the broker never acknowledged): send it again on the
                # next one (same id: the gateway drops the copy). Not ``ready.clear()``: a publish
                # that times out after the reconnect would make every later one wait for ever.
                await asyncio.sleep(0.1)
            else:
                return

    async def plug(
        self,
        evse: str,
        target_kwh: str | None = None,
        message_id: str | None = None,
        plan: Plan | None = None,
    ) -> str:
        """The EV is plugged in: ask the gateway for payment. Returns the message id."""
        if plan is not None:
            self.evses[evse].plan = plan
        message_id = message_id or uuid.uuid4().hex
        payload: dict[str, object] = {"v": 1, "id": message_id}
        if target_kwh is not None:
            payload["target_kwh"] = target_kwh
        await self.publish(evse, "plugged", payload)
        return message_id

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic == m.status_topic(self.settings.prefix):
                self.gateway_status.append(payload.decode())
                continue
            parsed = m.parse_topic(self.settings.prefix, topic)
            if parsed is None or parsed[1] not in self.evses:
                continue
            _, evse, name = parsed
            data = json.loads(payload)
            if data.get("id") in self._seen:
                continue
            if message.retain or _expired(data.get("expires")):
                self.ignored.append(str(data.get("id")))
                _LOGGER.warning("charger.command_ignored", extra={"topic": topic, "command": name})
                continue
            self._seen.add(str(data.get("id")))
            state = self.evses[evse]
            if name == "authorize":
                state.authorized.append(data)
                if state.plan.never_start:
                    continue
                if state.charging is None or state.charging.done():
                    state.stop.clear()
                    state.charging = asyncio.create_task(
                        self._charge(evse, state, str(data["session_id"]))
                    )
            elif name == "display":
                state.displayed.append(data)
            elif name == "stop" and data.get("session_id") == state.session_id:
                state.stopped.append(str(data.get("reason")))
                state.stop.set()
            elif name == "state" and data.get("session_id") == state.session_id:
                state.state_requests += 1
                if state.charging is not None and not state.charging.done():
                    await self._meter(evse, state)  # alive: the current reading

    async def _meter(self, evse: str, state: EvseState) -> None:
        state.seq += 1
        await self.publish(
            evse,
            "meter",
            {
                "v": 1,
                "id": uuid.uuid4().hex,
                "session_id": state.session_id,
                "seq": state.seq,
                "meter_wh": state.meter_wh,
            },
        )

    async def _charge(self, evse: str, state: EvseState, session_id: str) -> None:
        plan = state.plan
        state.session_id, state.meter_wh = session_id, plan.meter_start_wh
        await self.publish(
            evse,
            "started",
            {"v": 1, "id": uuid.uuid4().hex, "session_id": session_id, "meter_wh": state.meter_wh},
        )
        delivered, state.seq = 0, 0
        while delivered < plan.energy_wh and not state.stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(plan.interval_s):
                    await state.stop.wait()
            if state.stop.is_set():
                break
            step = min(plan.step_wh, plan.energy_wh - delivered)
            delivered += step
            state.meter_wh += step
            if plan.fault_after_wh is not None and delivered >= plan.fault_after_wh:
                await self.publish(
                    evse,
                    "fault",
                    {
                        "v": 1,
                        "id": uuid.uuid4().hex,
                        "session_id": session_id,
                        "reason": "ground fault",
                    },
                )
                return
            await self._meter(evse, state)
        reason = "stopped by the gateway" if state.stop.is_set() else "EV full"
        await self.publish(
            evse,
            "stopped",
            {
                "v": 1,
                "id": uuid.uuid4().hex,
                "session_id": session_id,
                "meter_wh": state.meter_wh,
                "session_energy_wh": delivered,
                "reason": reason,
            },
        )


def _expired(expires: object) -> bool:
    """A command past its ``expires`` (or with one that is not a time) is not obeyed."""
    if expires is None:
        return False
    try:
        return datetime.fromisoformat(str(expires)) <= datetime.now(UTC)
    except ValueError:
        return True
