"""Does the site broker keep strangers off the charger link? What ``evpay doctor`` asks it, live:

- an anonymous client must be refused at connect;
- a charger's account (the doctor's own, owning no EVSE) must not get a command through: it
  subscribes to a command topic it could be told on and publishes there; if its own message
  comes back, the broker has no ACL (any charger could authorize a free charge);
- that account must not write in another charger's topic tree (an ACL with ``+`` for ``%u``
  lets every charger speak for every EVSE): the broker's PUBACK (MQTT v5) tells.

Each answer is ``(ok, detail)``; ``ok`` None when the broker could not be asked at all.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from typing import Any

import aiomqtt

from firmware_bridge.link import BrokerSettings

WAIT_S = 2.0  # how long a probe message may take to come back through the broker


def _client(
    s: BrokerSettings,
    user: str | None,
    password: str | None,
    protocol: aiomqtt.ProtocolVersion | None = None,
) -> aiomqtt.Client:
    tls = ssl.create_default_context(cafile=s.ca_file) if s.tls else None
    return aiomqtt.Client(
        s.host,
        s.port,
        username=user,
        password=password,
        tls_context=tls,
        timeout=5,
        protocol=protocol,
    )


async def anonymous_refused(s: BrokerSettings) -> tuple[bool | None, str]:
    accepted = (
        False,
        f"{s.url} accepts anonymous clients: anyone on the network can start, meter and stop "
        "charges; set allow_anonymous false with a password file (firmware_bridge/broker.py)",
    )
    try:
        async with _client(s, None, None):
            return accepted
    except aiomqtt.MqttCodeError as exc:
        return True, f"refuses anonymous clients ({exc.rc})"
    except (aiomqtt.MqttError, OSError) as exc:
        return None, f"cannot reach {s.url}: {exc}"


async def command_refused(
    s: BrokerSettings, user: str, password: str, topic: str
) -> tuple[bool | None, str]:
    """``topic``: a command topic the account ``user`` must not be able to write."""
    marker = f"evpay-doctor-probe-{uuid.uuid4().hex}".encode()
    try:
        async with _client(s, user, password) as client:
            await client.subscribe(topic, qos=1)
            await client.publish(topic, marker, qos=1)
            try:
                async with asyncio.timeout(WAIT_S):
                    async for message in client.messages:
                        if message.payload == marker:
                            return False, (
                                f"charger account {user!r} got a command through on {topic}: the "
                                "broker has no ACL (firmware_bridge/broker.py writes one)"
                            )
            except TimeoutError:
                pass
    except aiomqtt.MqttCodeError as exc:
        return None, f"the doctor account {user!r} cannot connect ({exc.rc}): check its password"
    except (aiomqtt.MqttError, OSError) as exc:
        return None, f"cannot reach {s.url}: {exc}"
    own = f"/charger/{user}/"
    if own in topic:  # our topic contract: may this account write another charger's tree?
        foreign = topic.replace(own, "/charger/evpay-doctor-other/").rsplit("/", 1)[0]
        verdict = await tree_refused(s, user, password, foreign + "/plugged")
        if verdict[0] is not True:
            return verdict
    return True, f"a charger's command on {topic} and a write in another tree are refused (ACL)"


async def tree_refused(
    s: BrokerSettings, user: str, password: str, topic: str
) -> tuple[bool | None, str]:
    """``topic``: a charger message topic in another charger's tree. Over MQTT v5 the broker
    answers a publish the ACL refuses with the PUBACK reason "not authorized" (mosquitto 2);
    a success means ``user`` can speak for another charger's EVSEs (an ACL with + for %u). The
    probe's payload is not JSON: a gateway that hears it rejects it."""
    codes: list[int] = []
    try:
        async with _client(s, user, password, aiomqtt.ProtocolVersion.V5) as client:
            paho = client._client  # aiomqtt drops the PUBACK reason code: note it first
            passed_on = paho.on_publish

            def noted(*args: Any) -> None:
                codes.append(int(args[3].value))
                if passed_on is not None:
                    passed_on(*args)

            paho.on_publish = noted
            await client.publish(topic, b"evpay-doctor-probe", qos=1, timeout=WAIT_S)
    except aiomqtt.MqttCodeError as exc:
        return None, f"the doctor account {user!r} cannot connect ({exc.rc}): check its password"
    except (aiomqtt.MqttError, OSError) as exc:
        return None, f"cannot reach {s.url}: {exc}"
    if codes and codes[-1] < 0x80:
        return False, (
            f"charger account {user!r} may publish in another charger's tree ({topic}): the ACL "
            "must use %u, not + (firmware_bridge/broker.py writes one)"
        )
    return True, f"a write in another charger's tree ({topic}) is refused (ACL)"
