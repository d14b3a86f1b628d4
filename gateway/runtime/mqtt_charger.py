"""The charger port over MQTT: the gateway's ``ChargerLink`` on top of ``firmware_bridge``'s
``MqttLink`` (our topic contract on the site's broker). It maps the charger's messages to the
engine's charger events; the link itself is a supervised worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from firmware_bridge import contract as m
from firmware_bridge.link import BrokerSettings, Mapping, MqttLink
from gateway.payments.charger import (
    ChargeFaulted,
    ChargerEvent,
    ChargerEvents,
    ChargeStarted,
    ChargeStopped,
    MeterRead,
    PaymentRequested,
)


class MqttChargerLink(ChargerEvents):
    name = "charger"

    def __init__(
        self, settings: BrokerSettings, evses: set[str], mapping: Mapping | None = None
    ) -> None:
        super().__init__()
        self.mqtt = MqttLink(settings, evses, mapping)
        self.mqtt.listen(self._heard)
        self.connected = self.mqtt.connected

    @property
    def rejected(self) -> int:
        return self.mqtt.rejected

    async def authorize(
        self,
        evse: str,
        session_id: str,
        max_cost_minor: int,
        currency: str,
        start_by: datetime | None = None,
        repeat: bool = False,
    ) -> None:
        await self.mqtt.authorize(evse, session_id, max_cost_minor, currency, start_by, repeat)

    async def stop(self, evse: str, session_id: str, reason: str) -> None:
        await self.mqtt.stop(evse, session_id, reason)

    async def report_state(self, evse: str, session_id: str) -> None:
        await self.mqtt.report_state(evse, session_id)

    async def display(self, evse: str, lines: Sequence[str]) -> None:
        await self.mqtt.display(evse, list(lines))

    async def run(self, stopping: asyncio.Event) -> None:
        await self.mqtt.run(stopping)

    def _heard(self, evse: str, message: m.InboundMessage, stored: Callable[[], None]) -> None:
        event = charger_event(evse, message, stored)
        if event is None:
            stored()  # nothing for the engine (unplugged): acknowledged at once
        else:
            self._emit(event)


def charger_event(
    evse: str, message: m.InboundMessage, done: Callable[[], None] | None = None
) -> ChargerEvent | None:
    """A charger message as the engine hears it (``unplugged`` is not an engine event: a session
    ends with its stop); ``done`` acknowledges the message once the engine stored it."""
    match message:
        case m.Plugged():  # the message id is the pay request's idempotency key
            return PaymentRequested(
                evse=evse,
                request_id=message.id,
                target_kwh=m.kwh(message.target_kwh),
                target_amount=m.kwh(message.target_amount),
                done=done,
            )
        case m.Started():
            return ChargeStarted(
                evse=evse, session_id=message.session_id, meter_wh=message.meter_wh, done=done
            )
        # the charger's calibrated meter; a `signed` (OCMF) record is checked by the engine
        case m.Meter():
            return MeterRead(
                evse=evse,
                session_id=message.session_id,
                meter_wh=message.meter_wh,
                seq=message.seq,
                signed=message.signed,
                done=done,
            )
        case m.Stopped():
            return ChargeStopped(
                evse=evse,
                session_id=message.session_id,
                meter_wh=message.meter_wh,
                session_energy_wh=message.session_energy_wh,
                reason=message.reason,
                signed=message.signed,
                message_id=message.id,
                done=done,
            )
        case m.Fault():
            return ChargeFaulted(
                evse=evse, session_id=message.session_id, reason=message.reason, done=done
            )
    return None
