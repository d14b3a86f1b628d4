"""``evpay doctor``'s checks of the charger link's broker: does it persist what it holds for the
gateway, does it keep strangers out (issue 27: an anonymous, ACL-less broker let anyone start,
meter, stop and authorize charges), and can meter values be checked against each EVSE's rated
power."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # pass, fail, warn, skip
    detail: str


MOSQUITTO_CONF = Path("/etc/mosquitto/mosquitto.conf")


def broker_persistence(settings: Settings, conf: Path = MOSQUITTO_CONF) -> Check:
    """The gateway acknowledges a charger's message only once stored; until then the broker
    holds it. A broker that does not persist loses all it holds when it restarts (a stop, a
    meter value): the session would wait for a message that never comes."""
    name = "broker persistence"
    if not settings.charger.enabled or settings.charger.mode != "mqtt":
        return Check(name, "skip", "no MQTT charger link")
    host = urlsplit(settings.charger.broker).hostname or ""
    if host not in ("localhost", "127.0.0.1", "::1"):
        return Check(
            name,
            "warn",
            f"the broker ({host}) is not on this machine: make sure it persists sessions",
        )
    if not conf.is_file():
        return Check(
            name, "warn", f"{conf} not found: make sure the local broker persists sessions"
        )
    if _mosquitto_options(conf).get("persistence") == "true":
        return Check(name, "pass", f"{conf}: persistence true")
    return Check(
        name,
        "fail",
        f"{conf}: mosquitto does not persist: a broker restart loses the charger messages it "
        "holds for the gateway; set 'persistence true' and restart mosquitto",
    )


def _mosquitto_options(conf: Path) -> dict[str, str]:
    """The last value of each two-word option in a mosquitto config and its include_dir."""
    options: dict[str, str] = {}
    files = [conf]
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if len(words) == 2 and words[0] == "include_dir":
                files += sorted(Path(words[1]).glob("*.conf"))
            elif len(words) == 2:
                options[words[0]] = words[1]
    return options


def broker_access(settings: Settings, conf: Path = MOSQUITTO_CONF) -> list[Check]:
    """Issue 27: on an anonymous or ACL-less broker anyone can start, meter, stop and authorize
    charges. Asked of the broker itself: an anonymous connect must be refused, and a charger's
    account (``doctor_username``) must not get a command through."""
    from firmware_bridge import contract as m
    from firmware_bridge import probe
    from firmware_bridge.everest import BASE as EVEREST
    from firmware_bridge.link import BrokerSettings

    c = settings.charger
    if not c.enabled or c.mode != "mqtt":
        return [Check("broker access", "skip", "no MQTT charger link")]
    broker = BrokerSettings(url=c.broker, prefix=c.topic_prefix, ca_file=_text(c.ca_file))
    anonymous = asyncio.run(probe.anonymous_refused(broker))
    checks = [Check("broker anonymous", _verdict(anonymous[0]), anonymous[1])]
    if c.doctor_username is not None and c.doctor_password is not None:
        if c.mapping == "everest":
            topic = f"{EVEREST}/auth_token_provider/evpay-doctor-probe/m2e/provided_token"
        else:
            topic = m.topic(c.topic_prefix, c.doctor_username, "evpay-doctor-probe", "authorize")
        try:
            secret = c.doctor_password.reveal()
        except GatewayError as exc:
            return [*checks, Check("broker ACL", "fail", str(exc))]
        acl = asyncio.run(probe.command_refused(broker, c.doctor_username, secret, topic))
        return [*checks, Check("broker ACL", _verdict(acl[0]), acl[1])]
    host = urlsplit(c.broker).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1") and conf.is_file():
        if "acl_file" in _mosquitto_options(conf):
            detail = f"{conf}: acl_file set (set [charger] doctor_username to prove it live)"
            return [*checks, Check("broker ACL", "pass", detail)]
        detail = (
            f"{conf}: no acl_file: any charger can authorize a charge (evpay install writes one)"
        )
        return [*checks, Check("broker ACL", "fail", detail)]
    detail = "cannot tell: set [charger] doctor_username and doctor_password (a charger account)"
    return [*checks, Check("broker ACL", "warn", detail)]


def _verdict(ok: bool | None) -> str:
    return "pass" if ok else "fail"


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def rated_power(settings: Settings) -> Check:
    c = settings.charger
    if not c.enabled or c.mode != "mqtt":
        return Check("meter plausibility", "skip", "no MQTT charger link")
    missing = [e.id for e in c.evses if e.rated_power_kw is None]
    if missing:
        detail = f"no rated_power_kw for EVSEs {missing}: their meter values are not checked "
        return Check("meter plausibility", "warn", detail + "against the power they can deliver")
    return Check("meter plausibility", "pass", "every EVSE has its rated power")
