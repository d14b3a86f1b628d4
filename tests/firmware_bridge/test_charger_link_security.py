"""Issue 27's charger-link probes, each against a real mosquitto set up as a site's is
(``firmware_bridge/broker.py``): anonymous clients, other chargers and forged messages get
nowhere; a charger's own implausible readings become discrepancies, never a bill or a void."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from firmware_bridge import contract as m
from firmware_bridge.broker import GATEWAY_USER
from firmware_bridge.link import BrokerSettings, ContractMapping, MqttLink
from firmware_bridge.sim import ChargerSimulator, Plan
from tests.firmware_bridge.conftest import Broker
from tests.firmware_bridge.test_mqtt_link import site_factory  # noqa: F401 - the fixture

TREE = "evpay/v1/charger/charger/evse/E1"  # the tree of E1's charger (user "charger")


def client(broker: Broker, user: str | None, identifier: str | None = None) -> aiomqtt.Client:
    s = broker.settings(user) if user else BrokerSettings(url=broker.url)
    return aiomqtt.Client(
        s.host, s.port, username=s.username, password=s.password, identifier=identifier
    )


async def publish(
    broker: Broker, user: str | None, topic: str, payload: bytes, retain: bool = False
) -> None:
    async with client(broker, user) as c:
        await c.publish(topic, payload, qos=1, retain=retain)


async def test_an_anonymous_client_is_refused(broker: Broker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        async with client(broker, None):
            pass
    with pytest.raises(aiomqtt.MqttCodeError):  # a known user with a wrong password
        async with aiomqtt.Client("127.0.0.1", broker.port, username="charger", password="x"):
            pass


async def test_another_charger_cannot_plug_in_an_evse_that_is_not_its_own(
    site_factory: Any,  # noqa: F811
    broker: Broker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Probe: publish ``plugged`` for an EVSE and get a card prompt and a hold. In E1's tree the
    broker drops it (ACL); in its own tree the gateway refuses it and logs it."""
    site = await site_factory()
    plugged = json.dumps({"v": 1, "id": uuid.uuid4().hex}).encode()
    with caplog.at_level(logging.WARNING):
        await publish(broker, "intruder", f"{TREE}/plugged", plugged)
        await publish(broker, "intruder", "evpay/v1/charger/intruder/evse/E1/plugged", plugged)
        async with asyncio.timeout(5):
            while site.link.mqtt.refused < 1:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    assert site.daemon.store.sessions() == [] and site.link.mqtt.refused == 1
    assert any(r.msg == "mqtt.refused" for r in caplog.records)
    assert site.sim.state.transactions == {}  # no card prompt, no hold


async def test_forged_commands_never_reach_a_charger(broker: Broker) -> None:
    """Probes: a forged gateway ``authorize`` (a free charge the gateway never logs), a retained
    one that every charger connecting later sees. Only the gateway's user writes commands."""
    authorize, body = ContractMapping("evpay/v1").authorize("E1", "free", 99_999, "EUR", None)[0]
    for user in ("intruder", "charger", "charger2"):
        await publish(broker, user, authorize, body)
        await publish(broker, user, authorize, body, retain=True)
    charger = ChargerSimulator(broker.settings(), ["E1"], Plan(energy_wh=1_000, interval_s=0.01))
    stopping = asyncio.Event()
    task = asyncio.create_task(charger.run(stopping))
    try:
        async with asyncio.timeout(5):
            await charger.ready.wait()
        await publish(broker, "intruder", authorize, body)  # and while it listens
        await asyncio.sleep(0.5)
        assert charger.evses["E1"].authorized == []
    finally:
        stopping.set()
        await task


async def test_a_charger_obeys_no_retained_or_expired_command(tmp_path: Path) -> None:
    """The second line, for a broker without the ACL: a command the gateway never sends (retained,
    or past its ``expires``) is not obeyed; the gateway refuses and logs a command it did not
    send."""
    open_broker = Broker(tmp_path, open_broker=True)
    open_broker.start()
    try:
        mapping = ContractMapping("evpay/v1")
        topic, body = mapping.authorize("E1", "s-1", 1000, "EUR", None)[0]
        await publish(open_broker, None, topic, body, retain=True)  # left for later chargers
        stale = json.loads(body) | {"id": "old", "session_id": "s-2"}
        stale["expires"] = "2020-01-01T00:00:00Z"
        charger = ChargerSimulator(BrokerSettings(url=open_broker.url), ["E1"], Plan())
        stopping = asyncio.Event()
        task = asyncio.create_task(charger.run(stopping))
        link = MqttLink(BrokerSettings(url=open_broker.url), {"E1"})
        running = asyncio.create_task(link.run(stopping))
        async with asyncio.timeout(5):
            await charger.ready.wait()
            await link.connected.wait()
        await publish(open_broker, None, topic, json.dumps(stale).encode())
        async with asyncio.timeout(5):
            while len(charger.ignored) < 2 or link.refused < 2:
                await asyncio.sleep(0.05)
        assert charger.evses["E1"].authorized == []
        stopping.set()
        await asyncio.gather(task, running)
    finally:
        open_broker.stop()


async def test_the_gateway_status_is_the_gateways_alone(broker: Broker) -> None:
    """Probe: a retained ``online`` left while the gateway is down. Nobody but the gateway may
    write the status; the gateway's own ``online`` carries a message expiry and is refreshed,
    so it cannot outlive the gateway (not even across a broker restart that lost the will)."""
    status = m.status_topic("evpay/v1")
    for user in ("intruder", "charger"):
        await publish(broker, user, status, b"online", retain=True)
    assert await retained(broker, status) is None
    link = MqttLink(broker.settings(GATEWAY_USER, status_ttl_s=2), {"E1"})
    stopping = asyncio.Event()
    running = asyncio.create_task(link.run(stopping))
    async with asyncio.timeout(5):
        await link.connected.wait()
    await asyncio.sleep(0.3)
    found = await retained(broker, status, expiry=True)
    assert found is not None and found[0] == b"online" and 0 < found[1] <= 2, found
    await asyncio.sleep(2.5)  # refreshed while the gateway runs
    assert await retained(broker, status) == b"online"
    broker.stop()  # the broker goes with the gateway's "online" retained and persisted
    running.cancel()  # and the gateway dies while it is away
    await asyncio.gather(running, return_exceptions=True)
    broker.start()
    await asyncio.sleep(2.5)
    assert await retained(broker, status) != b"online"


async def retained(broker: Broker, topic: str, expiry: bool = False) -> Any:
    """What a charger connecting now finds retained on ``topic`` (with ``expiry``: and the
    message expiry the broker has left for it, MQTT v5)."""
    s = broker.settings("charger2")
    async with aiomqtt.Client(
        s.host,
        s.port,
        username=s.username,
        password=s.password,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as c:
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1):
                async for message in c.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else None
                    left = getattr(message.properties, "MessageExpiryInterval", None)
                    return (payload, left) if expiry else payload
        except TimeoutError:
            return None
    return None


async def test_nobody_takes_the_gateways_client_id(
    site_factory: Any,  # noqa: F811
    broker: Broker,
) -> None:
    """Probe: connect with the client id ``evpay-gateway`` and steal messages meant for the
    gateway. The broker makes every client id its user name: the gateway stays connected and
    the charger's messages still reach it."""
    site = await site_factory()
    async with client(broker, "intruder", identifier=GATEWAY_USER) as thief:
        await thief.subscribe("#", qos=1)
        await asyncio.sleep(0.5)
        assert site.link.connected.is_set()
        await site.charger.plug("E1")
        (row,) = await site.final()
    assert row["state"] == "completed" and row["data"]["billed_energy_wh"] == 8_000


async def test_a_forged_giant_meter_value_is_a_discrepancy_not_a_bill(
    site_factory: Any,  # noqa: F811
) -> None:
    """Probe: a forged 1 GWh meter value into a running session (priced at 583,042.88 EUR and
    capped at the hold). Faster than the EVSE's rated power: recorded, not billed."""
    site = await site_factory(
        plan=Plan(energy_wh=2_000, step_wh=200, interval_s=0.3), rated_kw=5000
    )
    evse = site.charger.evses["E1"]
    await site.charger.plug("E1")
    async with asyncio.timeout(10):
        while evse.meter_wh < 100_400:
            await asyncio.sleep(0.05)
    giant = {"v": 1, "id": "giant", "session_id": evse.session_id, "seq": 50}
    await site.charger.publish("E1", "meter", giant | {"meter_wh": 100_000 + 10**9})
    (row,) = await site.final()
    data = row["data"]
    assert row["state"] == "completed" and data["billed_energy_wh"] == 2_000
    assert data["captured_minor"] == 119  # 2 kWh * 0.50 + 19 %
    (why,) = data["discrepancies"]
    assert why.startswith("implausible meter value (meter 1000100000 Wh") and "rated" in why


async def test_a_stop_below_the_last_reading_never_voids_a_charged_session(
    site_factory: Any,  # noqa: F811
) -> None:
    """Probe: a forged ``stopped`` at the start reading mid-charge (voided, nothing billed, while
    the charger delivered 6 kWh). The stop reads less than already reported: recorded, and the
    session goes on to the charger's true stop."""
    site = await site_factory(plan=Plan(energy_wh=6_000, step_wh=1_000, interval_s=0.3))
    evse = site.charger.evses["E1"]
    await site.charger.plug("E1")
    async with asyncio.timeout(10):
        while evse.meter_wh < 102_000:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)  # the gateway has the 2 kWh reading
    forged = {"v": 1, "id": "forged-stop", "session_id": evse.session_id, "meter_wh": 100_000}
    await site.charger.publish("E1", "stopped", forged | {"session_energy_wh": 0})
    (row,) = await site.final()
    data = row["data"]
    assert row["state"] == "completed" and data["billed_energy_wh"] == 6_000, data["notes"]
    (why,) = data["discrepancies"]
    assert why.startswith("implausible stop (meter 100000 Wh, stopped:forged-stop)"), why


def test_a_listener_beyond_loopback_is_tls_only() -> None:
    from firmware_bridge.broker import TlsListener, mosquitto_conf

    with pytest.raises(ValueError, match="use TLS"):
        mosquitto_conf(port=1883, host="0.0.0.0", password_path="p", acl_path="a")
    tls = TlsListener(8883, "/c.crt", "/c.key", cafile="/ca.crt")
    conf = mosquitto_conf(port=1883, password_path="p", acl_path="a", tls=tls)
    assert "listener 1883 127.0.0.1\nuse_username_as_clientid true\n" in conf
    assert "listener 8883 0.0.0.0\nuse_username_as_clientid true\ncertfile /c.crt\n" in conf
    assert "require_certificate true" in conf and "allow_anonymous false" in conf
