"""Attacks on the charger link (issue 27) against a real mosquitto set up as a site's is and a
real daemon: E1 belongs to broker user "charger", E2 to "charger2"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from firmware_bridge.broker import GATEWAY_USER
from firmware_bridge.sim import ChargerSimulator, Plan
from gateway.runtime.app import Daemon
from gateway.runtime.mqtt_charger import MqttChargerLink
from gateway.settings import parse_settings
from tests.firmware_bridge.conftest import Broker
from tests.firmware_bridge.test_mqtt_link import Site, site_config

E2_TREE = "evpay/v1/charger/charger2/evse/E2"


@pytest.fixture
async def two_chargers(tmp_path: Path, broker: Broker) -> AsyncIterator[Any]:
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
    serving = asyncio.create_task(sim.serve_line(port))
    started: list[tuple[Site, asyncio.Event, asyncio.Task[None]]] = []

    async def start(plan: Plan | None = None, rated_kw: int | None = 11) -> Site:
        text = site_config(tmp_path / "m.sqlite3", port.slave_path, broker)
        e1 = 'id = "E1"\nterminal = "t1"\n'
        e2 = 'id = "E2"\nterminal = "t1"\n'
        rated = f"rated_power_kw = {rated_kw}\n" if rated_kw else ""
        text = text.replace(e1, f"{e1}{rated}").replace(e2, f'{e2}charger = "charger2"\n{rated}')
        daemon = Daemon(parse_settings(text, "<attack>"))
        task = asyncio.create_task(daemon.run())
        charger = ChargerSimulator(broker.settings("charger"), ["E1"], plan or Plan())
        stopping = asyncio.Event()
        charger_task = asyncio.create_task(charger.run(stopping))
        async with asyncio.timeout(15):
            await daemon.ready.wait()
            await charger.ready.wait()
            assert isinstance(daemon.charger, MqttChargerLink)
            await daemon.charger.connected.wait()
        site = Site(daemon, task, charger, sim)
        started.append((site, stopping, charger_task))
        return site

    yield start
    for site, stopping, charger_task in started:
        stopping.set()
        await asyncio.gather(charger_task, return_exceptions=True)
        if not site.task.done():
            site.daemon.request_stop("test over")
            await asyncio.gather(site.task, return_exceptions=True)
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await port.close()


async def as_user(broker: Broker, user: str, topic: str, payload: dict[str, Any]) -> None:
    s = broker.settings(user)
    async with aiomqtt.Client(s.host, s.port, username=s.username, password=s.password) as c:
        await c.publish(topic, json.dumps(payload).encode(), qos=1)


async def _collect(c: aiomqtt.Client, seen: list[str], seconds: float) -> None:
    """Every topic ``c`` hears within ``seconds``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in c.messages:
                seen.append(message.topic.value)  # noqa: PERF401 - a stream, not a list


async def charging(site: Site, at_least_wh: int) -> str:
    evse = site.charger.evses["E1"]
    async with asyncio.timeout(15):
        while not evse.session_id or evse.meter_wh < 100_000 + at_least_wh:
            await asyncio.sleep(0.02)
    return evse.session_id


async def test_another_charger_stops_a_session_by_naming_its_id(
    two_chargers: Any, broker: Broker
) -> None:
    """charger2 (a legitimate account, owner of E2 only) learns E1's session id (the receipt's
    EVP-<id>, a 409 from the API naming it, the CPO's CDR) and publishes, in its OWN tree, a
    stop for E1's session at the start reading with no energy. The session must not change."""
    site = await two_chargers(
        plan=Plan(energy_wh=6_000, step_wh=1_000, interval_s=0.6), rated_kw=None
    )
    await site.charger.plug("E1")
    sid = await charging(site, 0)
    await asyncio.sleep(0.2)  # the gateway has the start
    forged = {"v": 1, "id": uuid.uuid4().hex, "session_id": sid, "meter_wh": 100_000}
    await as_user(broker, "charger2", f"{E2_TREE}/stopped", forged | {"session_energy_wh": 0})
    (row,) = await site.final()
    data = row["data"]
    # the real charger delivered 6 kWh on E1
    assert data["billed_energy_wh"] == 6_000, (
        row["state"],
        data["billed_energy_wh"],
        data["notes"],
    )


async def test_a_stop_with_only_session_energy_is_not_screened(two_chargers: Any) -> None:
    """The owner's own charger (or whoever holds its password) stops right after the start with
    no meter_wh and session_energy_wh = 1 GWh: E1 is rated 11 kW, so this is impossible."""
    site = await two_chargers(plan=Plan(energy_wh=6_000, step_wh=1_000, interval_s=5))
    await site.charger.plug("E1")
    sid = await charging(site, 0)
    await asyncio.sleep(0.3)
    forged = {"v": 1, "id": uuid.uuid4().hex, "session_id": sid, "session_energy_wh": 10**9}
    await site.charger.publish("E1", "stopped", forged)
    await asyncio.sleep(1.0)
    row = site.daemon.store.session(sid) if hasattr(site.daemon.store, "session") else None
    rows = [r for r in site.daemon.store.sessions(limit=50) if r["id"] == sid]
    row = rows[0]
    data = row["data"]
    assert data.get("billed_energy_wh", 0) < 1_000, (row["state"], data.get("billed_energy_wh"))
    assert any("implausible" in d for d in data["discrepancies"])


async def test_another_charger_meters_a_session_by_naming_its_id(
    two_chargers: Any, broker: Broker
) -> None:
    """charger2 sends a plausible, low meter value with seq 2 for E1's session before the real
    seq 2 arrives: the real reading is then a duplicate (same event key) and is dropped."""
    site = await two_chargers(
        plan=Plan(energy_wh=4_000, step_wh=1_000, interval_s=0.8), rated_kw=None
    )
    await site.charger.plug("E1")
    sid = await charging(site, 1_000)
    forged = {"v": 1, "id": uuid.uuid4().hex, "session_id": sid, "seq": 2, "meter_wh": 100_001}
    await as_user(broker, "charger2", f"{E2_TREE}/meter", forged)
    await asyncio.sleep(0.3)
    mine = next(r for r in site.daemon.store.sessions(limit=50) if r["id"] == sid)["data"]
    assert all("100001" not in n for n in mine["notes"])
    readings = mine.get("readings") or []
    assert all(r[1] != 1 if isinstance(r, list) else True for r in readings), readings
    assert site.link.mqtt.refused >= 1, "the message from charger2's tree was not refused"


async def test_topic_tricks_never_reach_e1(two_chargers: Any, broker: Broker) -> None:
    """charger2 tries E1 through case, trailing slash, extra levels, unicode look-alikes,
    percent-encoding, an empty level: none is a payment request for E1. (HOLDS expected)"""
    site = await two_chargers()
    tops = [
        "evpay/v1/charger/charger2/evse/e1/plugged",
        "evpay/v1/charger/charger2/evse/E1/plugged/",
        "evpay/v1/charger/charger2/evse/E1/plugged/x",
        "evpay/v1/charger/charger2/evse/E\uff11/plugged",  # fullwidth one
        "evpay/v1/charger/charger2/evse/E%31/plugged",
        "evpay/v1/charger/charger2//evse/E1/plugged",
        "evpay/v1/charger/charger2/evse/E1 /plugged",
        "evpay/v1/charger/Charger/evse/E1/plugged",
        "evpay/v1/charger/charger/evse/E1/plugged",  # the broker's ACL
        "Evpay/v1/charger/charger/evse/E1/plugged",
    ]
    for topic in tops:
        await as_user(broker, "charger2", topic, {"v": 1, "id": uuid.uuid4().hex})
    await asyncio.sleep(1.0)
    assert site.daemon.store.sessions() == []
    assert site.sim.state.transactions == {}


async def test_a_charger_cannot_take_the_gateways_client_id_over_311(
    two_chargers: Any, broker: Broker
) -> None:
    """charger2 connects with MQTT 3.1.1 and client id evpay-gateway (use_username_as_clientid:
    it becomes "charger2"); the gateway stays connected and still serves E1. (HOLDS expected)"""
    site = await two_chargers(
        plan=Plan(energy_wh=2_000, step_wh=1_000, interval_s=0.2), rated_kw=None
    )
    s = broker.settings("charger2")
    async with aiomqtt.Client(
        s.host,
        s.port,
        username=s.username,
        password=s.password,
        identifier=GATEWAY_USER,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=False,
    ):
        await site.charger.plug("E1")
        (row,) = await site.final()
    assert row["state"] == "completed"
    assert site.link.connected.is_set()


async def test_a_charger_subscribing_to_everything_reads_nothing_of_e1(
    two_chargers: Any, broker: Broker
) -> None:
    """charger2 subscribes to evpay/v1/charger/+/evse/+/+ (v5): it must see none of E1's
    commands or messages while E1 charges. (HOLDS expected)"""
    site = await two_chargers(
        plan=Plan(energy_wh=2_000, step_wh=1_000, interval_s=0.2), rated_kw=None
    )
    s = broker.settings("charger2")
    seen: list[str] = []
    async with aiomqtt.Client(s.host, s.port, username=s.username, password=s.password) as c:
        await c.subscribe("evpay/v1/charger/+/evse/+/+", qos=1)
        await site.charger.plug("E1")
        await _collect(c, seen, 3.0)
    (row,) = await site.final()
    assert row["state"] == "completed" and seen == [], seen


async def test_a_charger_cannot_publish_a_command_or_status(
    two_chargers: Any, broker: Broker
) -> None:
    """charger2 publishes an authorize on E1's command topic and on its own E2 command topic,
    and a status: E1's charger never hears the authorize, the status stays the gateway's.
    (HOLDS expected)"""
    site = await two_chargers()
    auth = {
        "v": 1,
        "id": "x",
        "session_id": "s",
        "authorization_reference": "r",
        "max_cost_minor": 1,
        "currency": "EUR",
    }
    await as_user(broker, "charger2", "evpay/v1/charger/charger/evse/E1/authorize", auth)
    await as_user(broker, "charger2", f"{E2_TREE}/authorize", auth)
    s = broker.settings("charger2")
    async with aiomqtt.Client(s.host, s.port, username=s.username, password=s.password) as c:
        await c.publish("evpay/v1/gateway/status", b"online", qos=1, retain=True)
    await asyncio.sleep(1.0)
    assert site.charger.evses["E1"].authorized == []
    assert site.link.mqtt.refused == 0  # the broker dropped them: the gateway never saw one


async def test_stolen_meter_seqs_keep_the_cost_cap_from_stopping_a_charge(
    two_chargers: Any, broker: Broker
) -> None:
    site = await two_chargers(
        plan=Plan(energy_wh=200_000, step_wh=20_000, interval_s=1.0), rated_kw=None
    )
    await site.charger.plug("E1")
    sid = await charging(site, 0)
    async with asyncio.timeout(5):  # the gateway has the start: the session is charging
        while next(r for r in site.daemon.store.sessions(limit=50) if r["id"] == sid)["state"] != (
            "charging"
        ):
            await asyncio.sleep(0.01)
    for seq in range(1, 15):
        forged = {"v": 1, "id": uuid.uuid4().hex, "session_id": sid, "seq": seq}
        await as_user(broker, "charger2", f"{E2_TREE}/meter", forged | {"meter_wh": 100_000})
    (row,) = await site.final(timeout=40)
    data = row["data"]
    # the hold is 50.00 EUR at 0.595 EUR/kWh: the cap stops the charge near 83 kWh
    assert data["billed_energy_wh"] <= 100_000, (data["billed_energy_wh"], data.get("notes"))


async def test_another_charger_faults_a_session_by_naming_its_id(
    two_chargers: Any, broker: Broker
) -> None:
    site = await two_chargers(
        plan=Plan(energy_wh=6_000, step_wh=1_000, interval_s=0.6), rated_kw=None
    )
    await site.charger.plug("E1")
    sid = await charging(site, 1_000)
    forged = {"v": 1, "id": uuid.uuid4().hex, "session_id": sid, "reason": "ground fault"}
    await as_user(broker, "charger2", f"{E2_TREE}/fault", forged)
    (row,) = await site.final()
    assert site.charger.evses["E1"].stopped == [], site.charger.evses["E1"].stopped
    assert row["data"]["billed_energy_wh"] == 6_000, row["data"]["billed_energy_wh"]


async def test_a_huge_payload_from_a_charger_never_reaches_the_gateway(
    two_chargers: Any, broker: Broker
) -> None:
    site = await two_chargers()
    big = {"v": 1, "id": "big", "session_id": "x", "reason": "r" * (16 * 1024 * 1024)}
    before = site.link.rejected
    await as_user(broker, "charger2", f"{E2_TREE}/fault", big)
    await asyncio.sleep(2.0)
    # the broker must refuse it: the gateway must never have had to parse 16 MB
    assert site.link.rejected == before, "a 16 MB message reached the gateway"
