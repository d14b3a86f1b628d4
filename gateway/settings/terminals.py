"""The card terminals: what every terminal has, each protocol's own keys (ZVT, nexo) and the
union keyed by ``protocol``; a terminal's capabilities are data the pricing is checked against."""

from __future__ import annotations

from collections.abc import Callable
from datetime import time
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from drivers.base import Capabilities
from drivers.errors import DeviceUrlError
from drivers.transport.url import parse_device_url
from drivers.zvt.charset import DEFAULT_CHARSET, Charset
from drivers.zvt.messages import is_password
from gateway.settings.fields import Identifier, SecretRef, _Model

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
        default=False,
        description="after the batch closed, refund by card presence at the terminal (ZVT 06 31: "
        "the driver must come back with the card); false (the default): such a refund is refused "
        "with the reason and stays listed (the back office makes it). A terminal whose "
        "modifications go to an acquirer always refunds there",
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
