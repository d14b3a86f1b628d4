"""Does the site broker keep strangers off the charger link? What ``evpay doctor`` asks it, live:

- an anonymous client must be refused at connect;
- a charger's account (the doctor's own, owning no EVSE) must not get a command through: it
  subscribes to a command topic it could be told on and publishes there; if its own message
  comes back, the broker has no ACL (any charger could authorize a free charge).

Each answer is ``(ok, detail)``; ``ok`` None when the broker could not be asked at all.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid

import aiomqtt

from firmware_bridge.link import BrokerSettings

WAIT_S = 2.0  # how long a probe message may take to come back through the broker


def _client(s: BrokerSettings, user: str | None, password: str | None) -> aiomqtt.Client:
    tls = ssl.create_default_context(cafile=s.ca_file) if s.tls else None
    return aiomqtt.Client(
        s.host, s.port, username=user, password=password, tls_context=tls, timeout=5
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
    return True, f"a charger's command on {topic} is refused (ACL)"
