"""Charger user names with MQTT wildcards or separators (a careless operator's mosquitto_passwd):
the ACL's %u pattern must not turn into a wildcard over every charger's tree."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from firmware_bridge import broker as rules
from tests.firmware_bridge.conftest import MOSQUITTO, USERS, Broker, password

ODD = ("+", "#", "a/+", "charger/evse/E1/plugged/x")


@pytest.fixture
def odd_broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    b = Broker(tmp_path)
    users = {u: password(u) for u in (*USERS, *ODD)}
    (tmp_path / "mosquitto.passwd").write_text(rules.password_file(users), encoding="utf-8")
    b.start()
    yield b
    b.stop()


@pytest.mark.parametrize("user", ODD)
async def test_a_wildcard_user_name_writes_no_other_chargers_tree(
    odd_broker: Broker, user: str
) -> None:
    b = odd_broker
    g = b.settings(rules.GATEWAY_USER)
    tree = "evpay/v1/charger/charger/evse/E1/plugged"
    got: list[str] = []
    async with aiomqtt.Client(g.host, g.port, username=g.username, password=g.password) as gw:
        await gw.subscribe("evpay/v1/charger/#", qos=1)
        with contextlib.suppress(aiomqtt.MqttError):  # refused at connect: holds
            async with aiomqtt.Client(
                "127.0.0.1", b.port, username=user, password=password(user)
            ) as forger:
                await forger.publish(tree, json.dumps({"v": 1, "id": uuid.uuid4().hex}), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                async for message in gw.messages:
                    got.append(message.topic.value)  # noqa: PERF401 - a stream
    assert tree not in got, (user, got)
