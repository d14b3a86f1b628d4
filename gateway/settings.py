"""The one configuration model: a TOML file loaded into a pydantic tree.

Unknown keys are errors (a typo must never silently fall back to a default that moves
money). Secrets are never written in the model's output: they are *references* (an
environment variable, a file, a systemd credential) resolved only when used.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from drivers.base import Capabilities
from drivers.errors import AmountError, DeviceUrlError
from drivers.money import Money, known_currencies
from drivers.transport.url import parse_device_url
from drivers.zvt.charset import DEFAULT_CHARSET, Charset
from drivers.zvt.messages import is_password
from gateway.errors import ConfigError, SecretUnavailable
from gateway.fiscal.ocmf import OcmfError, check_key
from gateway.input_limits import (
    MAX_CONFIG_BYTES,
    MAX_SECRET_BYTES,
    Refused,
    check_toml_shape,
    read_text_file,
)
from gateway.payments.tariff import tariff_from_ocpi
from gateway.store.journal import load_signing_key, public_key_hex
from gateway.wire import OcpiTariff

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]


def _no_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueErrors as validation errors
            'write amounts as strings, e.g. "50.00" (a float is not exact)'
        )
    return value


Amount = Annotated[Decimal, BeforeValidator(_no_float)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """Where a secret lives. Exactly one of the four; ``value`` is for demos and tests."""

    env: str | None = None
    file: Path | None = None
    credential: str | None = Field(
        default=None, description="systemd LoadCredential= name, read from $CREDENTIALS_DIRECTORY"
    )
    value: SecretStr | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "credential", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file, credential or value")
        return self

    def reveal(self) -> str:
        """The secret's text; SecretUnavailable names where it was looked for (never the value)."""
        if self.value is not None:
            return self.value.get_secret_value()
        if self.env is not None:
            found = os.environ.get(self.env)
            if found is None:
                raise SecretUnavailable(f"secret: environment variable {self.env} is not set")
            return found
        path = self.file or Path()
        if self.credential is not None:
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if directory is None:
                raise SecretUnavailable(
                    f"secret: credential {self.credential!r} needs $CREDENTIALS_DIRECTORY "
                    f"(systemd LoadCredential=)"
                )
            path = Path(directory) / self.credential
        try:
            return read_text_file(path, MAX_SECRET_BYTES).strip()
        except OSError as exc:
            raise SecretUnavailable(f"secret: cannot read {path}: {exc.strerror}") from None
        except Refused as exc:
            raise SecretUnavailable(f"secret: refusing {path}: {exc}") from None

    def __repr__(self) -> str:
        where = self.env or self.file or self.credential or "inline"
        return f"SecretRef({where!s})"


class SiteSettings(_Model):
    id: Annotated[str, Field(min_length=1, max_length=36)]
    name: str = ""
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
    currency: str = "EUR"
    timezone: str = "UTC"

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if v not in known_currencies():
            raise ValueError(
                f"unknown currency {v!r}; known: {', '.join(sorted(known_currencies()))}"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name like Europe/Berlin)"
            ) from None
        return v


class StorageSettings(_Model):
    path: Path = Path("/var/lib/evpay/evpay.sqlite3")
    busy_timeout_ms: Annotated[int, Field(ge=0, le=60_000)] = 5000
    group: (
        Annotated[
            str,
            Field(
                pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
                description="a group that may read the database and exports (mode 0640)",
            ),
        ]
        | None
    ) = None  # None: mode 0600, the daemon's user only


class ApiClientSettings(_Model):
    """A client of the local API (a kiosk, a charger screen): its bearer token, by reference or
    as the SHA-256 of it. The daemon keeps only the hash."""

    id: Identifier
    token: SecretRef | None = None
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    @model_validator(mode="after")
    def _one(self) -> ApiClientSettings:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token (a secret reference) or token_sha256")
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiSettings(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8787
    # Who may start paid sessions (POST /evses/{evse}/pay): a bearer token per client. Required
    # for any bind beyond loopback; on loopback without clients, local processes may pay.
    clients: list[ApiClientSettings] = []
    # Browser pages allowed to call the API (their Origin header); any other Origin is refused.
    allowed_origins: list[str] = []

    @model_validator(mode="after")
    def _authenticated_beyond_loopback(self) -> ApiSettings:
        if not is_loopback(self.host) and not self.clients:
            raise ValueError(
                f"host {self.host!r} is reachable from the network: configure [[api.clients]] "
                f"bearer tokens "
                "(or bind to 127.0.0.1)"
            )
        return self


class LoggingSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["logfmt", "json"] = "logfmt"


class DaemonSettings(_Model):
    shutdown_grace_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    end_of_day_retry_s: Annotated[float, Field(gt=0, le=3600)] = (
        300.0  # a transaction was open: try again
    )
    restart_backoff_min_s: Annotated[float, Field(gt=0)] = 1.0
    restart_backoff_max_s: Annotated[float, Field(gt=0)] = 60.0


class FiscalSettings(_Model):
    """The site's receipt profile (gateway/fiscal/profiles.py): none, DE (Eichrecht: signed meter
    data, no per-receipt signature) or HR (a fiscal signature per receipt from the CPO)."""

    profile: Literal["none", "DE", "HR"] = "none"
    wait_s: Annotated[float, Field(ge=0, le=600)] = Field(
        default=20.0,
        description="how long a receipt waits for the CPO's fiscal signature before it prints as "
        "pending",
    )
    e_receipt_url: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=200)] | None = Field(
        default=None,
        description='where the complete receipt will be, "{reference}" replaced by the session\'s',
    )


BinRange = Annotated[
    str, Field(pattern=r"^\d{6}(-\d{6})?$", description='a BIN "412345" or a range "400000-499999"')
]


class RouteSettings(_Model):
    """An acquirer profile and when it is used (gateway/payments/routing.py): the first route
    whose conditions all match takes the payment, on its first healthy terminal."""

    id: Identifier
    terminals: list[Identifier] = Field(
        min_length=1, description="in order of preference: the first healthy one"
    )
    evses: list[str] = []  # empty: every EVSE
    countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = []
    brands: list[Literal["girocard", "jcb", "mastercard", "amex", "visa", "diners", "other"]] = []
    bins: list[BinRange] = []
    tariff: str | None = (
        None  # the tariff its payments are priced with (its currency must be the route's)
    )
    strategy: Literal["fixed", "target", "incremental"] | None = (
        None  # overrides [pricing] for this route
    )
    fixed_hold: dict[str, Amount] | None = None
    hold_min: Amount | None = None
    hold_max: Amount | None = None
    # The incremental strategy's first hold and each top-up, in the route's currency (the
    # [pricing] amounts are the site's currency: 20.00 EUR is not 2000 yen).
    incremental_initial: Amount | None = None
    incremental_step: Amount | None = None
    # [pricing] safety_margin and min_partial_approval for this route, in its currency (required
    # when that is not the site's: 0.50 EUR is not 50 yen)
    safety_margin: Amount | None = None
    min_partial_approval: Amount | None = None

    @field_validator("bins")
    @classmethod
    def _bins(cls, v: list[str]) -> list[str]:
        for text in v:
            lo, _, hi = text.partition("-")
            if hi and int(hi) < int(lo):
                raise ValueError(f"BIN range {text!r} ends before it starts")
        return v


class RoutingSettings(_Model):
    failover_after: Annotated[int, Field(ge=1, le=100)] = 3  # consecutive technical failures
    probe_every_s: Annotated[float, Field(ge=1, le=3600)] = (
        60.0  # a terminal that is out is asked this often
    )


class JournalSettings(_Model):
    """The device key that signs the journal's chain head (Ed25519 PEM, by reference: a file or
    a systemd credential). Without it the chain is still kept and checked, but nothing proves a
    cut-off tail or a rewritten chain (evpay journal verify says so)."""

    signing_key: SecretRef | None = None
    checkpoint_interval_s: Annotated[float, Field(ge=1, le=86_400)] = 300.0
    # Retention: journal rows of sessions final for longer than this are archived to
    # ``archive_dir`` (default: beside the database) under a signed cut and removed, with old
    # delivered messages. None keeps everything. Needs ``signing_key`` (the cut is signed).
    retention_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    archive_dir: Path | None = None

    @model_validator(mode="after")
    def _retention_needs_the_key(self) -> JournalSettings:
        if self.retention_days is not None and self.signing_key is None:
            raise ValueError(
                "retention_days needs signing_key: each retention cut is signed by the device key"
            )
        return self


SCHEMES = (
    "default",
    "mastercard",
    "maestro",
    "visa",
    "amex",
    "girocard",
    "jcb",
    "discover",
    "unionpay",
    "unknown",
)


def _validity_table(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"default": value}  # one number: the validity for every scheme
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(SCHEMES))
        if unknown:
            raise ValueError(f"unknown card scheme(s) {unknown}; known: {', '.join(SCHEMES)}")
    return value


ValidityHours = Annotated[dict[str, Annotated[int, Field(gt=1)]], BeforeValidator(_validity_table)]


Resolve = Callable[[str, SecretRef | None], str | None]


class _TerminalCommon(_Model):
    """What every terminal has, whatever it speaks."""

    id: Identifier
    currency: str | None = None
    printer: bool = Field(
        default=True, description="false: the receipt is shown on the display (at most 8 lines)"
    )
    end_of_day: time | None = Field(
        default=None,
        description='the daily end of day at the terminal, site time ("23:30"); none: no '
        "automatic one",
    )
    modifications: Identifier = Field(
        default="terminal",
        description='where adjustments, captures, cancels and refunds go: "terminal", or the '
        "name of an [acquirers.NAME] section",
    )
    card_present_refunds: bool = Field(
        default=True,
        description="after the batch closed, refund by card presence at the terminal (ZVT 06 31); "
        "false: such a refund is refused with the reason (the back office makes it). A terminal "
        "whose modifications go to an acquirer always refunds there",
    )
    hold_validity_hours: ValidityHours = Field(
        default_factory=dict,
        description="this acquirer's validity per card scheme, overriding [pricing]",
    )
    incremental: bool = Field(
        default=False, description="the terminal accepts reservation extensions (top-ups)"
    )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(incremental=self.incremental, card_first=True)

    def secret_problems(
        self,
        key: str,  # noqa: ARG002 - the members with secrets use them
        resolve: Resolve,  # noqa: ARG002
    ) -> list[str]:
        """This terminal's secrets resolved and checked; one ``dotted.key: problem`` each."""
        return []


class ZvtTerminalSettings(_TerminalCommon):
    protocol: Literal["zvt"] = "zvt"
    device: str = Field(description="serial:///dev/…, tcp://host:port or usb://VID:PID")
    password: SecretRef | None = Field(default=None, description="ZVT password, 6 digits")
    capture_mode: Literal["partial_reversal", "book_total"] = Field(
        default="partial_reversal",
        description="06 23 releasing the unused part, or 06 24 booking the used part",
    )
    topup_amount: Literal["increment", "total"] = Field(
        default="increment",
        description='what the answer to a top-up (reservation extension) carries: "increment" '
        '(the amount just added, the ZVT reading) or "total" (the hold\'s new total, as some '
        "terminals answer); an answer that contradicts it is an unknown outcome, never a guess",
    )
    charset: Charset = Field(
        default=DEFAULT_CHARSET,
        description="the terminal's text character set (ZVT default cp437; CardComplete "
        "terminals print iso-8859-1); a set the terminal announces (TLV 14) wins",
    )

    def secret_problems(self, key: str, resolve: Resolve) -> list[str]:
        if self.password is None:
            return [
                f"{key}.password: required (the terminal's 6-digit ZVT password; write even the "
                "factory default 000000 explicitly)"
            ]
        password = resolve(f"{key}.password", self.password)
        if password is not None and not is_password(password):
            return [
                f"{key}.password: a ZVT password is exactly 6 digits (got {len(password)} "
                "characters)"
            ]
        return []

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        try:
            parse_device_url(v)
        except DeviceUrlError as exc:
            raise ValueError(str(exc)) from None
        return v


class NexoKeySettings(_Model):
    """Adyen's shared key for the terminal API's application-level encryption."""

    identifier: Annotated[str, Field(min_length=1, max_length=64)]
    version: Annotated[int, Field(ge=0)]
    passphrase: SecretRef


class NexoTerminalSettings(_TerminalCommon):
    protocol: Literal["nexo"]
    device: str = Field(
        description="http://HOST:PORT/EPASSaleToPOI/3.1 (xml) or https://HOST:8443/nexo "
        "(adyen-json)"
    )
    encoding: Literal["xml", "adyen-json"] = "xml"
    sale_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,35}$")] = "EVPAY"
    poi_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,35}$")]
    reservations: bool = Field(
        default=True, description="FirstReservation/UpdateReservation/Completion"
    )
    release_open: bool = Field(
        default=True, description="the POI accepts a Reversal of an uncompleted reservation"
    )
    refunds: bool = True
    card_first: bool = Field(default=False, description="CardAcquisition before the amount")
    pinned_sha256: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{64}$")] | None = Field(
        default=None, description="the terminal certificate's SHA-256 (hex); required for https"
    )
    key: NexoKeySettings | None = Field(default=None, description="Adyen's key (adyen-json)")
    lab_plain_http: bool = Field(
        default=False, description="lab only: Adyen JSON over plain http or without a key"
    )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            reservations=self.reservations,
            incremental=self.incremental and self.reservations,
            release_open=self.release_open,
            refunds=self.refunds,
            card_first=self.card_first,
        )

    def secret_problems(self, key: str, resolve: Resolve) -> list[str]:
        if self.key is not None:
            resolve(f"{key}.key.passphrase", self.key.passphrase)
        return []

    @model_validator(mode="after")
    def _transport(self) -> NexoTerminalSettings:
        parts = urlsplit(self.device)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise ValueError(
                f"device {self.device!r}: a nexo POI is http://HOST:PORT/EPASSaleToPOI/3.1 "
                "or https://HOST:8443/nexo"
            )
        if parts.scheme == "https" and self.pinned_sha256 is None:
            raise ValueError("an https nexo device needs pinned_sha256 (its certificate)")
        if self.encoding == "adyen-json" and not self.lab_plain_http:
            if parts.scheme != "https":
                raise ValueError(
                    "Adyen JSON goes over https (plain http only with lab_plain_http = true)"
                )
            if self.key is None:
                raise ValueError("Adyen JSON needs key = { identifier, version, passphrase }")
        return self


def _default_protocol(value: object) -> object:
    """A terminal written before there was a choice of protocol is a ZVT terminal."""
    if isinstance(value, dict) and "protocol" not in value:
        return {**value, "protocol": "zvt"}
    return value


_TERMINAL_TAGS = frozenset(
    get_args(m.model_fields["protocol"].annotation)[0]
    for m in (ZvtTerminalSettings, NexoTerminalSettings)
)
TerminalSettings = Annotated[
    ZvtTerminalSettings | NexoTerminalSettings,
    Field(discriminator="protocol"),
    BeforeValidator(_default_protocol),
]


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


class InteropSettings(_Model):
    """Known deviations of real CPO platforms from OCPI 2.3.0. Default: the spec. Each is opt-in."""

    # Terminals reach the CPO by PUT {terminals}/{terminal_id} instead of POST {terminals}.
    terminal_method: Literal["POST", "PUT"] = "POST"
    # false: the CPO refuses PARTIAL_SUCCESS. A capture short of the price is then sent as SUCCESS
    # with the amount actually captured (total_costs), the shortfall named in the message.
    partial_success: bool = True
    # Collection URLs get a trailing slash (…/financial-advice-confirmations/), for CPOs that
    # answer the bare URL with a redirect or a 404.
    trailing_slash: bool = False
    # Sent in business_details, for CPOs that require the optional website.
    business_website: str | None = None


class UpstreamSettings(_Model):
    enabled: bool = False
    # gateway: we POST our credentials with token_a. cpo: the CPO registers with us, presenting
    # token_a (which we gave it out of band); needs `listen`.
    registration: Literal["gateway", "cpo"] = "gateway"
    versions_url: str = ""
    country_code: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "DE"
    party_id: Annotated[str, Field(pattern=r"^[A-Z0-9]{3}$")] = "EVP"
    token_a: SecretRef | None = None
    key: SecretRef | None = Field(
        default=None, description="Fernet key that encrypts the OCPI tokens at rest"
    )
    public_url: str = (
        "https://gateway.invalid/ocpi/versions"  # our versions URL, as the CPO should call it
    )
    listen: str = (
        ""  # HOST:PORT where the gateway serves its OCPI endpoints to the CPO; empty: not served
    )
    business_name: str = "EVPay Edge"
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    interop: InteropSettings = InteropSettings()
    # Trust. OCPI goes over https only; plain http only with this lab setting (logged loudly).
    allow_insecure_http: bool = False
    # Origins our tokens may go to besides the CPO's own (scheme://host[:port] or a host name).
    allowed_hosts: list[str] = []
    ca_file: Path | None = Field(
        default=None, description="CA bundle the CPO's certificate must chain to"
    )
    pin_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = Field(
        default=None,
        description="SHA-256 of the CPO's certificate (DER): pinned instead of CA checks",
    )
    tls_cert: Path | None = Field(
        default=None, description="our OCPI server's certificate chain (PEM)"
    )
    tls_key: SecretRef | None = Field(
        default=None, description="its private key (PEM), by reference"
    )

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> UpstreamSettings:
        if not self.enabled:
            return self
        if not self.allow_insecure_http:
            for key in ("versions_url", "public_url"):
                url = getattr(self, key)
                if url and not url.startswith("https://"):
                    raise ValueError(
                        f"{key} must be https:// (tokens travel with every request); for a lab "
                        f"only, set "
                        "allow_insecure_http = true"
                    )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.token_a is None or self.key is None:
            raise ValueError("an enabled upstream needs token_a and key")
        if self.registration == "gateway" and not self.versions_url:
            raise ValueError(
                'registration "gateway" needs versions_url (the CPO\'s versions endpoint)'
            )
        if self.registration == "cpo" and not self.listen:
            raise ValueError(
                'registration "cpo" needs listen: the CPO must reach our credentials endpoint'
            )
        return self


class AcquirerSettings(_Model):
    """An acquirer whose online API takes the modifications of terminals that name it
    (``modifications = "NAME"``): its profile (gateway/acquirer/profiles.py), where its API is,
    and the secrets of both directions, each by reference."""

    profile: Literal["adyen"] = "adyen"
    base_url: str = Field(description="the Checkout API with its version, e.g. …/v71")
    merchant_account: Annotated[str, Field(min_length=1, max_length=80)]
    api_key: SecretRef
    hmac_key: SecretRef = Field(description="the webhook HMAC key (hex)")
    webhook_username: Annotated[str, Field(min_length=1, max_length=80)]
    webhook_password: SecretRef
    webhook_deadline_s: Annotated[float, Field(gt=0, le=7 * 86400)] = Field(
        default=3600.0, description="a modification without its webhook by then is overdue"
    )
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 15.0

    @field_validator("base_url")
    @classmethod
    def _https(cls, v: str) -> str:
        parsed = urlsplit(v)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ValueError(f"{v!r} is not an http(s) URL")
        if parsed.scheme != "https" and not is_loopback(parsed.hostname):
            raise ValueError(
                "must be https:// (the API key travels with every request); plain http only "
                "to a loopback simulator"
            )
        return v.rstrip("/")


class PricingSettings(_Model):
    strategy: Literal["fixed", "target", "incremental"] = "fixed"
    fixed_hold: dict[str, Amount] = Field(default_factory=lambda: {"EUR": Decimal("50.00")})
    hold_min: Amount = Decimal("5.00")
    hold_max: Amount = Decimal("150.00")
    target_margin_pct: Amount = Decimal(10)
    assumed_power_kw: Amount = Decimal(11)
    incremental_initial: Amount = Decimal("20.00")
    incremental_step: Amount = Decimal("20.00")
    safety_margin: Amount = Decimal("0.50")  # stop charging this far below the hold
    min_partial_approval: Amount = Decimal("5.00")
    start_timeout_s: Annotated[int, Field(gt=0)] = 180
    retry_initial_s: Annotated[int, Field(gt=0)] = 30  # capture/release retries back off from here
    retry_max_s: Annotated[int, Field(gt=0)] = 1800  # ... doubling up to this
    # How long a pre-authorisation stays valid, per card scheme ("default" for any other or
    # an unknown card): the engine stops charging and captures before it lapses.
    hold_validity_hours: ValidityHours = Field(
        default_factory=lambda: {"default": 48, "mastercard": 720, "visa": 120}
    )
    stop_before_expiry_hours: Annotated[int, Field(ge=0)] = 24
    answer_timeout_s: Annotated[int, Field(ge=30)] = (
        360  # a terminal command not answered by then is asked about
    )
    # Zero energy delivered: release the whole hold (false), or bill the tariff's flat/time parts
    # (true).
    bill_without_energy: bool = False
    default_tariff: str | None = None
    tariffs: list[dict[str, Any]] = []  # OCPI Tariff objects (mod_tariffs field names)

    @field_validator("tariffs")
    @classmethod
    def _tariffs(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for raw in v:
            try:
                OcpiTariff.model_validate(raw, context={"decimal_strings": True})
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"tariff {raw.get('id', '?')}: {where}: {first['msg']}") from None
            tariff_from_ocpi(raw)  # raises ValueError naming the tariff and field
        return v

    @field_validator("fixed_hold")
    @classmethod
    def _holds(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        for code, amount in v.items():
            try:
                held = Money.parse(str(amount), code)
            except AmountError as exc:
                raise ValueError(str(exc)) from None
            if held.minor == 0:
                raise ValueError(f"{code} hold must be positive")
        return v

    @model_validator(mode="after")
    def _clamps(self) -> PricingSettings:
        if self.hold_min > self.hold_max:
            raise ValueError("hold_min must not exceed hold_max")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must not be below retry_initial_s")
        ids = [str(t.get("id")) for t in self.tariffs]
        if self.default_tariff is not None and self.default_tariff not in ids:
            raise ValueError(
                f"default_tariff {self.default_tariff!r} is not among the tariffs {ids}"
            )
        return self


class Settings(_Model):
    site: SiteSettings
    storage: StorageSettings = StorageSettings()
    api: ApiSettings = ApiSettings()
    logging: LoggingSettings = LoggingSettings()
    daemon: DaemonSettings = DaemonSettings()
    terminals: list[TerminalSettings] = []
    charger: ChargerSettings = ChargerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    pricing: PricingSettings = PricingSettings()
    journal: JournalSettings = JournalSettings()
    fiscal: FiscalSettings = FiscalSettings()
    routes: list[RouteSettings] = []
    routing: RoutingSettings = RoutingSettings()
    acquirers: dict[Identifier, AcquirerSettings] = {}

    @model_validator(mode="after")
    def _references(self) -> Settings:
        ids = [t.id for t in self.terminals]
        if len(ids) != len(set(ids)):
            raise ValueError("terminal ids must be unique")
        if self.charger.enabled and self.charger.mode == "ocpi":
            if not self.upstream.enabled:
                raise ValueError(
                    'charger mode "ocpi" needs an enabled [upstream] (the CPO runs the charger)'
                )
            missing = [e.id for e in self.charger.evses if not e.location]
            if missing:
                raise ValueError(
                    f'charger mode "ocpi" needs a location for every EVSE; missing for {missing}'
                )
        if self.fiscal.profile not in ("none", self.site.country):
            raise ValueError(
                f"fiscal profile {self.fiscal.profile} does not fit the site's country "
                f"{self.site.country}"
            )
        tariff_ids = {str(t.get("id")) for t in self.pricing.tariffs}
        for evse in self.charger.evses:
            if evse.terminal not in ids:
                raise ValueError(
                    f"evse {evse.id!r} names terminal {evse.terminal!r}, which is not configured"
                )
            if evse.tariff is not None and evse.tariff not in tariff_ids:
                raise ValueError(
                    f"evse {evse.id!r} names tariff {evse.tariff!r}, which is not configured"
                )
            self._check_evse_priced(evse)
        if self.acquirers and not (self.upstream.enabled and self.upstream.listen):
            raise ValueError(
                "[acquirers] need their webhooks: they are received on the OCPI server, so set "
                "[upstream] enabled and listen"
            )
        for terminal in self.terminals:
            if (
                terminal.modifications != "terminal"
                and terminal.modifications not in self.acquirers
            ):
                raise ValueError(
                    f"terminal {terminal.id!r}: modifications = {terminal.modifications!r} names "
                    f'no [acquirers.{terminal.modifications}] section (or use "terminal")'
                )
        self._check_routes()
        self._check_capabilities()
        return self

    def _check_capabilities(self) -> None:
        """Every terminal a payment can reach can carry out the strategy it would be paid
        with: its capabilities are data, so a policy it cannot do is refused here."""
        terminals = {t.id: t for t in self.terminals}
        uses = [(f"evse {e.id!r}", e.terminal, self.pricing.strategy) for e in self.charger.evses]
        uses += [
            (f"route {r.id!r}", t, r.strategy or self.pricing.strategy)
            for r in self.routes
            for t in r.terminals
        ]
        for who, terminal_id, strategy in uses:
            found = terminals.get(terminal_id)
            if found is None:
                continue  # reported by the reference checks
            caps = found.capabilities
            if not caps.reservations:
                raise ValueError(
                    f"{who}: terminal {terminal_id!r} cannot pre-authorise (reservations = "
                    f"false), and every pricing strategy holds an amount first"
                )
            if "card" in self.charger.start_paths and not caps.card_first:
                raise ValueError(
                    f'{who}: start_paths has "card" (a card read first), and terminal '
                    f"{terminal_id!r} cannot read a card before the amount (card_first)"
                )
            if strategy == "incremental" and not caps.incremental:
                raise ValueError(
                    f'{who}: the "incremental" strategy needs top-ups, and terminal '
                    f"{terminal_id!r} has none (set incremental = true if it can, or use "
                    f'"fixed" or "target")'
                )

    def _check_evse_priced(self, evse: EvseSettings) -> None:
        """Every EVSE can be priced, in a currency its terminal charges in: a session that
        cannot be priced holds the driver's money with no cost cap, no capture and no release
        until the hold lapses. Energy given away is a setting, explicit and capped."""
        tariff_id = evse.tariff or self.pricing.default_tariff
        if tariff_id is None:
            if evse.free_vend_kwh is None:
                raise ValueError(
                    f"evse {evse.id!r} has no tariff (neither its own nor pricing.default_tariff)"
                    ": give it one, or set its free_vend_kwh to give energy away explicitly"
                )
            return
        if evse.free_vend_kwh is not None:
            raise ValueError(
                f"evse {evse.id!r}: free vend is for an EVSE without a tariff, and it has "
                f"{tariff_id!r}"
            )
        currency = next(
            (str(t.get("currency")) for t in self.pricing.tariffs if str(t.get("id")) == tariff_id),
            None,
        )
        charges = self.terminal_currency(evse.terminal)
        if currency != charges:
            raise ValueError(
                f"evse {evse.id!r} is priced with tariff {tariff_id!r} in {currency}, but its "
                f"terminal {evse.terminal!r} charges in {charges}: give the EVSE a tariff in "
                f"{charges}"
            )

    def terminal_currency(self, terminal_id: str) -> str:
        found = next((t for t in self.terminals if t.id == terminal_id), None)
        return (found.currency if found and found.currency else None) or self.site.currency

    def _check_routes(self) -> None:
        """A route's terminals charge in one currency, and every tariff its payments can be
        priced with is in that currency: refused here, not at the first session."""
        ids = {t.id for t in self.terminals}
        tariffs = {str(t.get("id")): str(t.get("currency")) for t in self.pricing.tariffs}
        evses = {e.id: e for e in self.charger.evses}
        if len({r.id for r in self.routes}) != len(self.routes):
            raise ValueError("route ids must be unique")
        for r in self.routes:
            unknown = [t for t in r.terminals if t not in ids]
            if unknown:
                raise ValueError(
                    f"route {r.id!r} names terminal(s) {unknown}, which are not configured"
                )
            currencies = {self.terminal_currency(t) for t in r.terminals}
            if len(currencies) != 1:
                raise ValueError(f"route {r.id!r} mixes terminals charging in {sorted(currencies)}")
            (currency,) = currencies
            missing = [e for e in r.evses if e not in evses]
            if missing:
                raise ValueError(
                    f"route {r.id!r} names EVSE(s) {missing}, which are not configured"
                )
            if r.tariff is not None and r.tariff not in tariffs:
                raise ValueError(
                    f"route {r.id!r} names tariff {r.tariff!r}, which is not configured"
                )
            priced = (
                {r.tariff}
                if r.tariff
                else {
                    e.tariff or self.pricing.default_tariff
                    for eid, e in evses.items()
                    if not r.evses or eid in r.evses
                }
            )
            for tariff in sorted(t for t in priced if t):
                if tariffs.get(tariff) != currency:
                    raise ValueError(
                        f"route {r.id!r} charges in {currency} but tariff {tariff!r} is in "
                        f"{tariffs.get(tariff)}: give the route a tariff in {currency}"
                    )
            if r.fixed_hold is not None and currency not in r.fixed_hold:
                raise ValueError(
                    f"route {r.id!r}: fixed_hold has no amount in its currency {currency}"
                )
            if currency != self.site.currency and (r.hold_min is None or r.hold_max is None):
                raise ValueError(
                    f"route {r.id!r} charges in {currency}, not the site's {self.site.currency}: "
                    f"give its hold_min and hold_max in {currency}"
                )
            strategy = r.strategy or self.pricing.strategy
            fixed = r.fixed_hold or self.pricing.fixed_hold
            if strategy == "fixed" and currency not in fixed:
                raise ValueError(f"route {r.id!r}: the fixed hold has no amount in {currency}")
            if (
                strategy == "incremental"
                and currency != self.site.currency
                and (r.incremental_initial is None or r.incremental_step is None)
            ):
                raise ValueError(
                    f"route {r.id!r} charges in {currency}, not the site's {self.site.currency}: "
                    f"give its incremental_initial and incremental_step in {currency}"
                )
            if currency != self.site.currency and (
                r.safety_margin is None or r.min_partial_approval is None
            ):
                raise ValueError(
                    f"route {r.id!r} charges in {currency}, not the site's {self.site.currency}: "
                    f"give its safety_margin and min_partial_approval in {currency}"
                )
            for name, amount in (
                ("hold_min", r.hold_min),
                ("hold_max", r.hold_max),
                ("incremental_initial", r.incremental_initial),
                ("incremental_step", r.incremental_step),
                ("safety_margin", r.safety_margin),
                ("min_partial_approval", r.min_partial_approval),
                *((f"fixed_hold.{c}", a) for c, a in (r.fixed_hold or {}).items()),
            ):
                if amount is not None:
                    try:
                        Money.parse(
                            str(amount), currency if "." not in name else name.split(".")[1]
                        )
                    except AmountError as exc:
                        raise ValueError(f"route {r.id!r}: {name}: {exc}") from None


def parse_settings(text: str, source: str) -> Settings:
    """Validate TOML text; ConfigError lists every problem as ``dotted.key: what is wrong``."""
    try:
        check_toml_shape(text)
        raw = tomllib.loads(text)
    except Refused as exc:
        raise ConfigError(source, [f"TOML refused before parsing: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax: {exc}"]) from None
    except RecursionError:  # the last line of defence if the shape check ever misses one
        raise ConfigError(source, ["TOML refused: nested too deep to parse"]) from None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err) for err in exc.errors()]) from None
    return _resolve_paths(settings, source)


def load_settings(path: Path) -> Settings:
    try:
        text = read_text_file(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    except Refused as exc:
        raise ConfigError(str(path), [f"refusing the file: {exc}"]) from None
    return parse_settings(text, str(path))


def _describe(err: ErrorDetails) -> str:
    loc = list(err["loc"])
    if len(loc) > 2 and loc[0] == "terminals" and loc[2] in _TERMINAL_TAGS:
        del loc[2]  # the union member pydantic tried: the technician wrote no such key
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (check its spelling; unknown keys are not ignored)"
    if kind == "missing":
        return f"{key}: required but missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{key}: {msg}"


def _resolve_paths(settings: Settings, source: str) -> Settings:
    """A relative storage path is relative to the config file, not to the working directory."""
    path = settings.storage.path
    if path.is_absolute() or source.startswith("<"):
        return settings
    base = Path(source).resolve().parent
    storage = settings.storage.model_copy(update={"path": base / path})
    return settings.model_copy(update={"storage": storage})


WEBHOOK_PASSWORD_MIN = 16  # characters, as for the local API's client tokens
HMAC_KEY_MIN_BYTES = 32  # Adyen's webhook HMAC keys are 32 bytes (64 hex digits)


def check_secrets(settings: Settings) -> list[str]:
    """Resolve every secret reference and check its form; one ``dotted.key: problem`` per fault.
    The secrets themselves are never part of a message."""
    problems: list[str] = []

    def resolve(key: str, ref: SecretRef | None) -> str | None:
        if ref is None:
            return None
        try:
            return ref.reveal()
        except SecretUnavailable as exc:
            problems.append(f"{key}: {str(exc).removeprefix('secret: ')}")
            return None

    for i, terminal in enumerate(settings.terminals):
        problems.extend(terminal.secret_problems(f"terminals.{i}", resolve))
    for i, client in enumerate(settings.api.clients):
        token = resolve(f"api.clients.{i}.token", client.token)
        if token is not None and len(token) < 16:
            problems.append(
                f"api.clients.{i}.token: too short ({len(token)} characters; use 16 or more)"
            )
    if settings.charger.enabled and settings.charger.mode == "mqtt":
        resolve("charger.password", settings.charger.password)  # doctor_password: doctor's own
    pem = resolve("journal.signing_key", settings.journal.signing_key)
    if pem is not None:
        try:
            load_signing_key(pem, "journal.signing_key")
        except SecretUnavailable as exc:
            problems.append(str(exc))
    if settings.upstream.enabled:
        resolve("upstream.token_a", settings.upstream.token_a)
        fernet_key = resolve("upstream.key", settings.upstream.key)
        if fernet_key is not None:
            try:
                Fernet(fernet_key.encode("ascii"))
            except (ValueError, TypeError, UnicodeEncodeError):
                problems.append("upstream.key: not a Fernet key (32 url-safe base64-encoded bytes)")
    for name, acquirer in settings.acquirers.items():
        resolve(f"acquirers.{name}.api_key", acquirer.api_key)
        password = resolve(f"acquirers.{name}.webhook_password", acquirer.webhook_password)
        if password is not None and len(password) < WEBHOOK_PASSWORD_MIN:
            problems.append(
                f"acquirers.{name}.webhook_password: too short ({len(password)} characters; "
                f"use {WEBHOOK_PASSWORD_MIN} or more)"
            )
        hmac_key = resolve(f"acquirers.{name}.hmac_key", acquirer.hmac_key)
        if hmac_key is not None and not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", hmac_key):
            problems.append(f"acquirers.{name}.hmac_key: not a hex key (as Adyen shows it)")
        elif hmac_key is not None and len(hmac_key) < 2 * HMAC_KEY_MIN_BYTES:
            problems.append(
                f"acquirers.{name}.hmac_key: too short ({len(hmac_key) // 2} bytes; Adyen's "
                f"keys have {HMAC_KEY_MIN_BYTES})"
            )
    return problems


def journal_signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """The device key that signs journal checkpoints, or None when none is configured."""
    ref = settings.journal.signing_key
    return None if ref is None else load_signing_key(ref.reveal(), "journal.signing_key")


def journal_public_key(settings: Settings) -> str | None:
    """The device key's public half (hex): what journal checkpoints are checked against."""
    key = journal_signing_key(settings)
    return public_key_hex(key) if key else None


def load_checked(path: Path) -> Settings:
    """The settings of ``path`` with every secret resolved and checked: ConfigError otherwise."""
    settings = load_settings(path)
    problems = check_secrets(settings)
    if problems:
        raise ConfigError(str(path), problems)
    return settings
