"""A careless operator's broker ACL (issue 27): what `evpay doctor`'s live probes pass."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from firmware_bridge import broker as rules
from firmware_bridge import contract as m
from firmware_bridge import probe
from tests.firmware_bridge.conftest import MOSQUITTO, Broker, password

# The operator "simplified" the charger patterns: + instead of %u (every charger, every tree);
# commands and status stay the gateway's, so the doctor's command probe still passes.
CARELESS = rules.acl().replace(
    "pattern write evpay/v1/charger/%u/", "pattern write evpay/v1/charger/+/"
)


@pytest.fixture
def careless_broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    b = Broker(tmp_path)
    (tmp_path / "mosquitto.acl").write_text(CARELESS, encoding="utf-8")
    b.start()
    yield b
    b.stop()


async def test_doctor_fails_an_acl_that_lets_a_charger_write_another_chargers_tree(
    careless_broker: Broker,
) -> None:
    b = careless_broker
    s = b.settings(rules.DOCTOR_USER)
    anonymous = await probe.anonymous_refused(s)
    command_topic = m.topic("evpay/v1", rules.DOCTOR_USER, "evpay-doctor-probe", "authorize")
    command = await probe.command_refused(
        s, rules.DOCTOR_USER, password(rules.DOCTOR_USER), command_topic
    )
    # the hole is real: charger2 writes into E1's tree (the gateway would take it as E1's)
    g = b.settings(rules.GATEWAY_USER)
    c2 = b.settings("charger2")
    tree = "evpay/v1/charger/charger/evse/E1/plugged"
    async with aiomqtt.Client(g.host, g.port, username=g.username, password=g.password) as gw:
        await gw.subscribe(tree, qos=1)
        async with aiomqtt.Client(
            c2.host, c2.port, username=c2.username, password=c2.password
        ) as forger:
            await forger.publish(tree, json.dumps({"v": 1, "id": uuid.uuid4().hex}), qos=1)
        async with asyncio.timeout(3):
            async for message in gw.messages:
                assert message.topic.value == tree
                break
    assert anonymous[0] is True
    # the doctor must fail this broker: it passes
    assert command[0] is False, command
