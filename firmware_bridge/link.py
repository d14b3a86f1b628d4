"""Our topic contract over a real broker: ``MqttLink`` publishes the gateway's commands and
hands every valid charger message to its listener. The gateway's charger port is built on it
(``gateway/runtime/mqtt_charger.py``); like ``drivers``, this package never imports the gateway.

- MQTT v5 where the broker speaks it, 3.1.1 otherwise; QoS 1 both ways; a persistent session
  (fixed client id, no clean start) so what the charger sent while the gateway restarted is
  delivered afterwards.
- ``offline`` (retained) is the last will: chargers see at once when payment is unavailable.
  ``online`` is retained with an MQTT v5 message expiry and refreshed while the gateway runs, so
  it never outlives the gateway by more than ``STATUS_TTL_S`` (not even across a broker restart
  that loses the will).
- Commands are never retained and expire (MQTT v5 message expiry, and an ``expires`` field the
  charger checks): a charger that reconnects late is not told to start a charge long gone.
- Who sent a message is told by the broker: a charger writes only in its own topic tree (the
  ACL of ``broker.py``), and the gateway takes an EVSE's messages only from the tree of the
  charger it belongs to. A message from another tree, a retained charger message, or a command
  on a command topic that the gateway did not send is refused and logged (``mqtt.refused``).
- Reconnect with exponential backoff; commands published while the broker is away wait in a
  bounded queue and go out on reconnect (the engine's deadlines cover a charger that never
  hears them).
- Every inbound message is validated (``contract.py``); a malformed one, or one for an EVSE
  this site does not have, is logged with its topic and dropped — it never changes money
  state. Redeliveries are recognised by message id (a bounded memory) and, after a restart,
  by the engine's own idempotent steps.
- A valid message is acknowledged (PUBACK) only when its listener says it is stored: the
  broker keeps what the gateway had not stored when it died, and delivers it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import ValidationError

from firmware_bridge import contract as m
from firmware_bridge.mapping import COMMAND_TTL_S as COMMAND_TTL_S
from firmware_bridge.mapping import ContractMapping as ContractMapping
from firmware_bridge.mapping import Mapping as Mapping
from firmware_bridge.mapping import Publish as Publish
from firmware_bridge.mapping import Refused as Refused
from firmware_bridge.mapping import reference as reference

_LOGGER = logging.getLogger(__name__)
_SEEN = 10_000  # message ids remembered for de-duplication
_PENDING = 1_000  # commands kept while the broker is away
_SESSIONS = 10_000  # session -> EVSE of the authorizations sent (oldest forgotten first)
KEEPALIVE_S = 5.0  # EVerest's communication check wants a sign of life within its timeout
STATUS_TTL_S = 30  # a retained "online" the gateway stopped refreshing expires after this


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    url: str = "mqtt://127.0.0.1:1883"
    prefix: str = "evpay/v1"
    client_id: str = "evpay-gateway"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    session_expiry_s: int = 3600
    status_ttl_s: int = STATUS_TTL_S  # a retained "online" not refreshed expires after this

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class MqttLink:
    def __init__(
        self, settings: BrokerSettings, evses: set[str], mapping: Mapping | None = None
    ) -> None:
        self.settings = settings
        self.evses = evses
        self.mapping = mapping or ContractMapping(settings.prefix)
        self._listeners: list[Callable[[str, m.InboundMessage, Callable[[], None]], None]] = []
        self._client: aiomqtt.Client | None = None
        self._pending: deque[tuple[str, bytes]] = deque(maxlen=_PENDING)
        # message -> the acknowledgements waiting for it to be stored (None: stored, acknowledged)
        self._seen: OrderedDict[tuple[str, str], list[Callable[[], object]] | None] = OrderedDict()
        self.connected = asyncio.Event()
        self.rejected = 0
        self.refused = 0  # of those rejected: from a sender that may not send them
        # the EVSE each session was authorized on (our own commands: the truth about whose it
        # is); a message naming a session of another EVSE is refused. The engine checks it too,
        # whatever this bounded memory has forgotten.
        self._session_evse: OrderedDict[str, str] = OrderedDict()
        self.protocol: aiomqtt.ProtocolVersion | None = None

    # ---- commands ------------------------------------------------------------------------

    def listen(self, listener: Callable[[str, m.InboundMessage, Callable[[], None]], None]) -> None:
        """Called with (evse, message, stored) for every valid, first-seen charger message; the
        listener calls ``stored()`` once the message's effect is durable (then it is
        acknowledged)."""
        self._listeners.append(listener)

    async def authorize(
        self,
        evse: str,
        session_id: str,
        max_cost_minor: int,
        currency: str,
        start_by: datetime | None = None,
        repeat: bool = False,
    ) -> None:
        self._session_evse[session_id] = evse
        self._session_evse.move_to_end(session_id)
        if len(self._session_evse) > _SESSIONS:
            self._session_evse.popitem(last=False)
        for topic, payload in self.mapping.authorize(
            evse, session_id, max_cost_minor, currency, start_by, repeat
        ):
            await self._publish(topic, payload)

    async def stop(self, evse: str, session_id: str, reason: str) -> None:
        for topic, payload in self.mapping.stop(evse, session_id, reason):
            await self._publish(topic, payload)

    async def report_state(self, evse: str, session_id: str) -> None:
        for topic, payload in self.mapping.report_state(evse, session_id):
            await self._publish(topic, payload)

    async def display(self, evse: str, lines: list[str]) -> None:
        for topic, payload in self.mapping.display(evse, lines):
            await self._publish(topic, payload)

    # ---- the worker ----------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        delay = 0.5
        while not stopping.is_set():
            try:
                await self._session(stopping)
                delay = 0.5
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                _LOGGER.warning(
                    "mqtt.disconnected",
                    extra={"broker": self.settings.url, "error": str(exc), "retry_s": delay},
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stopping.wait()
                delay = min(delay * 2, 30.0)

    def _client_for(self, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
        s = self.settings
        will = aiomqtt.Will(m.status_topic(s.prefix), b"offline", qos=1, retain=True)
        properties = None
        extra: dict[str, object] = {}
        if protocol is aiomqtt.ProtocolVersion.V5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry_s
            extra["clean_start"] = False
        else:
            extra["clean_session"] = False
        tls = ssl.create_default_context(cafile=s.ca_file) if s.tls else None
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            will=will,
            protocol=protocol,
            properties=properties,
            tls_context=tls,
            max_queued_incoming_messages=10_000,
            keepalive=30,
            timeout=10,
            **extra,  # type: ignore[arg-type]
        )
        client._client.manual_ack_set(
            True
        )  # aiomqtt does not expose it: acknowledged once stored (receive)
        return client

    async def _session(self, stopping: asyncio.Event) -> None:
        protocols = (
            [self.protocol]
            if self.protocol
            else [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311]
        )
        for i, protocol in enumerate(protocols):
            try:
                async with self._client_for(protocol) as client:
                    self.protocol = protocol
                    await self._serve(client, stopping)
                    return
            except aiomqtt.MqttCodeError as exc:
                if i + 1 < len(protocols):  # an old broker refuses v5: speak 3.1.1
                    _LOGGER.info("mqtt.protocol_fallback", extra={"error": str(exc)})
                    continue
                raise

    async def _serve(self, client: aiomqtt.Client, stopping: asyncio.Event) -> None:
        prefix = self.settings.prefix
        self._client = client
        # MQTT v5: never our own commands back (after a restart their ids are forgotten, and
        # each would look forged); 3.1.1 has no such option: the ids we sent tell them apart.
        options = SubscribeOptions(qos=1, noLocal=True)
        v5 = self.protocol is aiomqtt.ProtocolVersion.V5
        for subscription in self.mapping.subscriptions():
            if v5:
                await client.subscribe(subscription, options=options)
            else:
                await client.subscribe(subscription, qos=1)
        await self._online(client)
        self.connected.set()
        _LOGGER.info(
            "mqtt.connected",
            extra={"broker": self.settings.url, "protocol": int(self.protocol or 0)},
        )
        while self._pending:
            topic, payload = self._pending[0]
            await client.publish(topic, payload, qos=1, properties=self._expiry(COMMAND_TTL_S))
            self._pending.popleft()
        reader = asyncio.create_task(self._read(client))
        alive = asyncio.create_task(self._keepalive(client))
        stop = asyncio.create_task(stopping.wait())
        try:
            done, _ = await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                reader.result()  # re-raise the broker error: reconnect
            else:
                await client.publish(m.status_topic(prefix), b"offline", qos=1, retain=True)
        finally:
            reader.cancel()
            alive.cancel()
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await alive
            self._client = None
            self.connected.clear()

    def _expiry(self, seconds: int) -> Properties | None:
        """An MQTT v5 message expiry (3.1.1 has none: there the ``expires`` field must do)."""
        if self.protocol is not aiomqtt.ProtocolVersion.V5:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = seconds
        return properties

    async def _online(self, client: aiomqtt.Client) -> None:
        """Retained, so a charger connecting later sees it, but expiring unless refreshed."""
        status = m.status_topic(self.settings.prefix)
        expiry = self._expiry(self.settings.status_ttl_s)
        await client.publish(status, b"online", qos=1, retain=True, properties=expiry)

    async def _read(self, client: aiomqtt.Client) -> None:
        paho = client._client
        async for message in client.messages:
            payload = (
                message.payload
                if isinstance(message.payload, bytes)
                else str(message.payload).encode()
            )
            # The acknowledgement goes on the connection that brought the message; once that is
            # gone, the broker delivers the message again on the next one.
            ack = partial(paho.ack, message.mid, message.qos)
            self.receive(message.topic.value, payload, ack, retained=message.retain)

    def _check_session(self, evse: str, message: m.InboundMessage) -> None:
        """Refuse a message naming a session authorized on another EVSE (issue 27)."""
        session_id = getattr(message, "session_id", None)
        if session_id is None:
            return
        owner = self._session_evse.get(session_id)
        if owner is not None and owner != evse:
            raise Refused(f"session of EVSE {owner[:48]} named from EVSE {evse[:48]}")

    async def _keepalive(self, client: aiomqtt.Client) -> None:
        """What the other side needs to see us alive (EVerest's communication check)."""
        while True:
            for topic, payload in self.mapping.keepalive():
                await client.publish(topic, payload, qos=1)
            await asyncio.sleep(min(KEEPALIVE_S, self.settings.status_ttl_s / 3))
            await self._online(client)  # refreshed well within its expiry

    async def _publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            self._pending.append((topic, payload))  # sent when the broker is back
            return
        try:
            await client.publish(topic, payload, qos=1, properties=self._expiry(COMMAND_TTL_S))
        except aiomqtt.MqttError as exc:
            _LOGGER.warning("mqtt.publish_failed", extra={"topic": topic, "error": str(exc)})
            self._pending.append((topic, payload))

    # ---- inbound (sans-I/O: tests and the simulator call it directly too) ----------------

    def receive(
        self,
        topic: str,
        payload: bytes,
        ack: Callable[[], object] = lambda: None,
        *,
        retained: bool = False,
    ) -> m.InboundMessage | None:
        """One inbound message, validated and de-duplicated, to the listeners; None if ignored.
        ``ack`` acknowledges it to the broker: at once if it is dropped, once stored otherwise.
        ``retained``: the broker kept it for whoever subscribes (no charger message is)."""
        try:
            if retained:
                raise Refused("a retained message (a charger never retains one)")
            decoded = self.mapping.decode(topic, payload)
            if decoded is not None:
                self._check_session(*decoded)
        except Refused as exc:
            ack()
            self.rejected += 1
            self.refused += 1
            _LOGGER.warning("mqtt.refused", extra={"topic": topic[:200], "error": str(exc)})
            return None
        except (ValidationError, ValueError) as exc:
            ack()
            self.rejected += 1
            why = str(exc).splitlines()[0]
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                why = f"{'.'.join(str(p) for p in first['loc']) or 'payload'}: {first['msg']}"
            _LOGGER.warning("mqtt.rejected", extra={"topic": topic, "error": why})
            return None
        if decoded is None:
            ack()
            return None
        evse, message = decoded
        if evse not in self.evses:
            ack()
            self.rejected += 1
            _LOGGER.warning("mqtt.unknown_evse", extra={"topic": topic, "evse": evse[:48]})
            return None
        key = (evse, message.id)
        if key in self._seen:  # a redelivery: acknowledged with the first copy, once that is stored
            waiting = self._seen[key]
            if waiting is None:
                ack()
            else:
                waiting.append(ack)
            return None
        acks: list[Callable[[], object]] = [ack]
        self._seen[key] = acks

        def stored() -> None:
            if self._seen.get(key) is acks:
                self._seen[key] = None
            for each in acks:
                each()
            acks.clear()

        if len(self._seen) > _SEEN:
            self._seen.popitem(last=False)
        if not self._listeners:
            stored()
        for listener in self._listeners:
            listener(evse, message, stored)
        return message
