"""An acquirer's online API for the modifications of the terminals that name it."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gateway.settings.fields import SecretRef, _Model, is_loopback


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
