"""The credentials handshake, client side (OCPI credentials module).

With token A (given out of band) the gateway discovers the CPO's versions, picks 2.3.0,
reads its endpoints, and POSTs its own credentials (token B, its versions URL, its role) to
the CPO's credentials endpoint; the answer carries token C, which authorises every later
call. The PTP has no Role in OCPI's enum: it registers as ``OTHER`` (see the protocol note).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from gateway.errors import OcpiRejected, UpstreamError
from gateway.ocpi.client import OcpiClient
from gateway.ocpi.models import (
    BusinessDetails,
    Credentials,
    CredentialsRole,
    Version,
    VersionDetails,
)

VERSION = "2.3.0"


@dataclass(frozen=True, slots=True)
class Registration:
    token_b: str  # ours: what the CPO presents to us
    token_c: str  # theirs: what we present to the CPO
    peer_versions_url: str
    endpoints: VersionDetails

    def payments_url(self, path: str) -> str:
        """D1 of the protocol note: the published payments URL is a base for both sub-paths."""
        base = self.endpoints.url("payments", "RECEIVER")
        if base is None:
            raise UpstreamError("the CPO publishes no payments RECEIVER endpoint for version 2.3.0")
        return f"{base.rstrip('/')}/{path}"


async def discover(client: OcpiClient, versions_url: str) -> VersionDetails:
    versions = [
        Version.model_validate(v) for v in (await client.request("GET", versions_url)).data or []
    ]
    chosen = next((v for v in versions if v.version == VERSION), None)
    if chosen is None:
        offered = ", ".join(v.version for v in versions) or "none"
        raise OcpiRejected(
            f"the CPO offers OCPI {offered}, not {VERSION}", http_status=200, status_code=3002
        )
    return VersionDetails.model_validate((await client.request("GET", chosen.url)).data)


def our_credentials(
    token_b: str,
    our_versions_url: str,
    party: tuple[str, str],
    name: str,
    website: str | None = None,
) -> Credentials:
    details = BusinessDetails(name=name, website=website)
    return Credentials(
        token=token_b,
        url=our_versions_url,
        roles=[
            CredentialsRole(
                role="OTHER", business_details=details, country_code=party[0], party_id=party[1]
            )
        ],
    )


async def rotate(
    client_with_token_c: OcpiClient, registration: Registration, ours: Credentials
) -> Registration:
    """PUT new credentials (a fresh token B, already accepted by our server); the CPO answers
    with a fresh token C."""
    url = registration.endpoints.url("credentials", "RECEIVER") or registration.endpoints.url(
        "credentials", "SENDER"
    )
    if url is None:
        raise UpstreamError("the CPO publishes no credentials endpoint")
    reply = await client_with_token_c.request("PUT", url, ours.to_json())
    theirs = Credentials.model_validate(reply.data)
    return Registration(ours.token, theirs.token, theirs.url, registration.endpoints)


async def unregister(client_with_token_c: OcpiClient, registration: Registration) -> None:
    """DELETE our credentials: the CPO forgets token C and stops calling us."""
    url = registration.endpoints.url("credentials", "RECEIVER") or registration.endpoints.url(
        "credentials", "SENDER"
    )
    if url is None:
        raise UpstreamError("the CPO publishes no credentials endpoint")
    await client_with_token_c.request("DELETE", url)


def new_token() -> str:
    return secrets.token_urlsafe(24)


async def register(
    client_with_token_a: OcpiClient, versions_url: str, our_credentials_: Credentials
) -> Registration:
    """Gateway-initiated: POST our credentials (with token B) to the CPO, get token C back.

    Our OCPI server must already answer with token B: a CPO calls our versions and version
    details back before it answers the POST (the registration procedure has it do so)."""
    details = await discover(client_with_token_a, versions_url)
    credentials_url = details.url("credentials", "RECEIVER") or details.url("credentials", "SENDER")
    if credentials_url is None:
        raise UpstreamError("the CPO publishes no credentials endpoint")
    reply = await client_with_token_a.request("POST", credentials_url, our_credentials_.to_json())
    theirs = Credentials.model_validate(reply.data)
    return Registration(our_credentials_.token, theirs.token, theirs.url, details)


async def accept(client_with_their_token: OcpiClient, theirs: Credentials) -> Registration:
    """CPO-initiated: the CPO POSTed its credentials to us with the token A we gave it. Read its
    versions and endpoints with its token (before answering), then it gets a fresh token from us."""
    details = await discover(client_with_their_token, theirs.url)
    return Registration(new_token(), theirs.token, theirs.url, details)
