"""Our MQTT topic contract with the charger firmware, version 1 (``firmware_bridge/README.md``).

Topics, under a configurable prefix (default ``evpay/v1``), one tree per charger (its broker
user name): the broker's ACL lets a charger write only under its own name, so the topic tells the
gateway who sent a message, and the gateway takes an EVSE's messages only from the tree of the
charger that EVSE belongs to (``firmware_bridge/README.md``, "Who may say what").

    charger → gateway   {prefix}/charger/{charger}/evse/{evse}/plugged | unplugged | started
                        | meter | stopped | fault
    gateway → charger   {prefix}/charger/{charger}/evse/{evse}/authorize | stop | state | display
    gateway status      {prefix}/gateway/status   ("offline", retained, is the last will)

Every payload is a JSON object with ``v`` (the contract version) and ``id`` (unique per message:
a redelivered message carries the same id and is ignored). The models refuse unknown fields
and wrong types: a malformed message is logged with its topic and changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

VERSION: Literal[1] = 1
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Evse = Annotated[str, StringConstraints(min_length=1, max_length=48, pattern=r"^[^/#+]+$")]
Wh = Annotated[int, Field(ge=0, le=10**12)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: Literal[1] = VERSION
    id: Id


# ---- charger → gateway --------------------------------------------------------------------


class Plugged(_Message):
    """An EV is plugged in (or the driver chose this EVSE on the charger's screen): ask for
    payment."""

    target_kwh: Annotated[str, StringConstraints(pattern=r"^\d{1,4}(\.\d{1,3})?$")] | None = None
    target_amount: Annotated[str, StringConstraints(pattern=r"^\d{1,6}(\.\d{1,3})?$")] | None = None


class Unplugged(_Message):
    pass


class Started(_Message):
    session_id: Id
    meter_wh: Wh


class Meter(_Message):
    session_id: Id
    seq: Annotated[int, Field(ge=0)]
    meter_wh: Wh
    power_w: Annotated[int, Field(ge=0)] | None = None
    signed: Annotated[str, StringConstraints(max_length=8192)] | None = (
        None  # e.g. OCMF, kept byte-exact
    )


class Stopped(_Message):
    session_id: Id
    meter_wh: Wh | None = None
    session_energy_wh: Wh | None = None
    reason: Annotated[str, StringConstraints(max_length=100)] = "stopped"
    signed: Annotated[str, StringConstraints(max_length=8192)] | None = (
        None  # the transaction's OCMF record
    )


class Fault(_Message):
    session_id: Id
    reason: Annotated[str, StringConstraints(max_length=200)]


InboundMessage = Plugged | Unplugged | Started | Meter | Stopped | Fault

INBOUND: dict[str, type[InboundMessage]] = {
    "plugged": Plugged,
    "unplugged": Unplugged,
    "started": Started,
    "meter": Meter,
    "stopped": Stopped,
    "fault": Fault,
}


# ---- gateway → charger --------------------------------------------------------------------


class Authorize(_Message):
    """Start charging for this session, within this cost cap, before this deadline. The charger
    carries ``authorization_reference`` into its OCPP transaction, so the CPO's Session and CDR
    match the payment."""

    session_id: Id
    authorization_reference: Id
    max_cost_minor: Annotated[int, Field(ge=0)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    start_by: datetime | None = (
        None  # charging must start before this (UTC), else the hold is released
    )
    expires: datetime | None = None  # heard after this (UTC): not obeyed (a stale command)


class Stop(_Message):
    session_id: Id
    reason: Annotated[str, StringConstraints(max_length=100)]
    expires: datetime | None = None  # a command heard after this (UTC) is not obeyed


class ReportState(_Message):
    """Report your state for this session now: a ``meter`` message with the current reading
    (or ``stopped`` / ``fault`` if the charge is over). Sent after the EVSE's meter has been
    silent for its deadline (``meter_silence_s``); no answer in a bounded wait and the gateway
    stops the charge and bills the last trusted reading."""

    session_id: Id
    expires: datetime | None = None  # a command heard after this (UTC) is not obeyed


class Display(_Message):
    """Text for the charger's screen (the price must be shown before charging starts)."""

    lines: list[Annotated[str, StringConstraints(max_length=64)]] = Field(max_length=8)
    expires: datetime | None = None


COMMANDS = frozenset({"authorize", "stop", "state", "display"})
DEFAULT_CHARGER = "charger"  # the broker user of an EVSE whose charger the config does not name


def topic(prefix: str, charger: str, evse: str, name: str) -> str:
    return f"{prefix}/charger/{charger}/evse/{evse}/{name}"


def status_topic(prefix: str) -> str:
    return f"{prefix}/gateway/status"


def parse_topic(prefix: str, value: str) -> tuple[str, str, str] | None:
    """(charger, evse, message name) of a topic in a charger's tree under ``prefix``, or None."""
    head = f"{prefix}/charger/"
    if not value.startswith(head):
        return None
    parts = value[len(head) :].split("/")
    if len(parts) != 4 or parts[1] != "evse" or not all(parts):
        return None
    return parts[0], parts[2], parts[3]


def kwh(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


ALL: dict[str, type[_Message]] = {
    **INBOUND,
    "authorize": Authorize,
    "stop": Stop,
    "state": ReportState,
    "display": Display,
}
SCHEMAS = "schemas/v1"  # one JSON schema per payload, next to this file


def schema(name: str) -> str:
    """The JSON schema of one payload, as shipped in ``schemas/v1/<name>.json``."""
    import json

    return json.dumps(ALL[name].model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m firmware_bridge.contract: write the schemas
    from pathlib import Path

    folder = Path(__file__).parent / SCHEMAS
    folder.mkdir(parents=True, exist_ok=True)
    for message_name in ALL:
        (folder / f"{message_name}.json").write_text(schema(message_name), encoding="utf-8")
