"""The site itself and what runs on it: its identity, storage, local API, logs, daemon timings,
journal key and retention, and fiscal profile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from drivers.money import known_currencies
from gateway.settings.fields import Identifier, SecretRef, _Model, is_loopback


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
