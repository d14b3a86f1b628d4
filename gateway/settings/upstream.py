"""The CPO upstream (OCPI): registration, trust (https, pins, hosts) and the known deviations of
real CPO platforms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from gateway.settings.fields import SecretRef, _Model


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
