"""The chargers: how the site reaches them (MQTT, the CPO over OCPI, simulated), their EVSEs and
how a session may start."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from gateway.fiscal.ocmf import OcmfError, check_key
from gateway.settings.fields import Identifier, SecretRef, _Model, is_loopback


class EvseSettings(_Model):
    id: Annotated[str, Field(min_length=1, max_length=48)]
    terminal: Identifier
    tariff: str | None = None  # a pricing.tariffs id; default: pricing.default_tariff
    free_vend_kwh: Annotated[Decimal, Field(gt=0)] | None = Field(
        default=None,
        description="an EVSE without a tariff gives at most this much energy free of charge, "
        "recorded as free vend; without it every EVSE needs a tariff",
    )
    location: str | None = None  # the OCPI location id of this EVSE (charger mode "ocpi")
    everest_module: str | None = (
        None  # mapping "everest": this EVSE's evse_manager_consumer module id
    )
    connector: Annotated[int, Field(ge=1, le=16)] = (
        1  # mapping "everest": the connector the token is for
    )
    meter_public_key: str | None = Field(
        default=None,
        description="the meter's OCMF public key (DER SubjectPublicKeyInfo or a bare point, "
        "hex/base64)",
    )
    # mapping "evpay": the charger (its broker user) this EVSE belongs to; its messages are taken
    # only from that charger's topic tree (firmware_bridge/README.md, "Who may say what").
    charger: Identifier = "charger"
    # The most this EVSE can deliver: a meter value claiming energy faster than this is recorded
    # as a discrepancy, never billed (gateway/payments/plausibility.py). Unset: not checked
    # (`evpay doctor` warns).
    # below 1 kW is a typing error (0.011 for 11): every true reading would be implausible
    rated_power_kw: Annotated[Decimal, Field(ge=1, le=5000)] | None = None
    # No meter reading for this long while charging: the charger is stopped and the charge billed
    # to its last trusted reading (released if nothing was delivered). Unset: a silent charger
    # keeps the hold until its validity ends.
    meter_silence_s: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] | None = None

    @field_validator("meter_public_key")
    @classmethod
    def _meter_key(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_key(v)
            except OcmfError as exc:
                raise ValueError(str(exc)) from None
        return v


StartPath = Literal["plug", "kiosk", "card"]
START_PATHS: tuple[StartPath, ...] = ("plug", "kiosk")


class ChargerSettings(_Model):
    enabled: bool = False
    # mqtt: the charger firmware over the site's broker (firmware_bridge: our contract or EVerest);
    # ocpi: the CPO runs the charger (OCPI Commands, Session and CDR pushes; needs the upstream);
    # simulated: in-process, for tests.
    mode: Literal["mqtt", "ocpi", "simulated"] = "mqtt"
    broker: str = Field(default="mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/]+$")
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = (
        "evpay/v1"
    )
    client_id: Identifier = "evpay-gateway"  # fixed: the broker keeps our session across restarts
    username: str | None = None
    password: SecretRef | None = None
    ca_file: Path | None = None  # for mqtts:// brokers with their own CA
    # mqtt: "evpay" speaks our topic contract (firmware_bridge/README.md); "everest" is an external
    # module of EVerest's MQTT API (firmware_bridge/everest.py), with these module ids.
    mapping: Literal["evpay", "everest"] = "evpay"
    # How sessions may start at this site: "plug" (the charger asks when an EV is plugged in or the
    # driver picks the EVSE on its screen), "kiosk" (POST /evses/{evse}/pay on the local API) and
    # "card" (a card tapped at the terminal first: its read-card loop, ZVT 06 C0).
    start_paths: list[StartPath] = Field(default_factory=lambda: list(START_PATHS), min_length=1)
    everest_token_provider: str = "evpay_token_provider"  # noqa: S105 - a module id, not a secret
    everest_auth_consumer: str = "evpay_auth_consumer"
    # A charger account that owns no EVSE: `evpay doctor` connects with it to prove the broker's
    # ACL refuses a charger's command (firmware_bridge/broker.py writes it as "evpay-doctor").
    doctor_username: Identifier | None = None
    doctor_password: SecretRef | None = None
    evses: list[EvseSettings] = []

    @model_validator(mode="after")
    def _broker_beyond_loopback(self) -> ChargerSettings:
        """A broker on the network is reached over TLS, with our own user (issue 27)."""
        host = urlsplit(self.broker).hostname or ""
        if self.mode == "mqtt" and not is_loopback(host):
            if not self.broker.startswith("mqtts://"):
                raise ValueError(
                    f"broker {host!r} is beyond loopback: use mqtts:// (TLS), never plain MQTT"
                )
            if self.username is None or self.password is None:
                raise ValueError(f"broker {host!r} is beyond loopback: set username and password")
        return self

    @model_validator(mode="after")
    def _chargers_are_not_the_gateway(self) -> ChargerSettings:
        ours = {self.client_id, self.username, self.doctor_username} - {None}
        wrong = [e.id for e in self.evses if e.charger in ours]
        if wrong:
            raise ValueError(
                f"EVSEs {wrong}: their charger must be a charger's broker user, not the gateway's "
                "or the doctor's"
            )
        return self

    @model_validator(mode="after")
    def _everest_modules(self) -> ChargerSettings:
        missing = [e.id for e in self.evses if self.mapping == "everest" and not e.everest_module]
        if missing:
            raise ValueError(
                f'mapping "everest" needs everest_module (its evse_manager_consumer) for EVSEs '
                f"{missing}"
            )
        return self
