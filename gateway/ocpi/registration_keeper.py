"""Our registration with the CPO as the upstream worker keeps it: tokens encrypted at rest, the
stored registration read back, and what the CPO may do to it (read, rotate or end it, or
register with us: the server's ``CredentialsKeeper``)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from cryptography.fernet import Fernet, InvalidToken

from gateway.errors import ConfigError, UpstreamError
from gateway.ocpi.client import OcpiClient, Trust
from gateway.ocpi.handshake import Registration, accept, new_token, our_credentials, rotate
from gateway.ocpi.models import Credentials, VersionDetails
from gateway.ocpi.server import PtpServer
from gateway.settings import UpstreamSettings
from gateway.store import Store

_LOGGER = logging.getLogger("gateway.ocpi.worker")  # the worker's log name, as before


class TokenVault:
    """Encrypts tokens for the store; a wrong key is a configuration error, never a silent reset."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode("ascii"))
        except (ValueError, TypeError):
            raise ConfigError(
                "upstream.key", ["not a Fernet key (32 url-safe base64 bytes)"]
            ) from None

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ConfigError(
                "upstream.key",
                [
                    "cannot decrypt the stored OCPI tokens: the key changed (restore it or "
                    "re-register)"
                ],
            ) from None


class RegistrationKeeper:
    """The registration part of ``UpstreamWorker`` (which sets these)."""

    settings: UpstreamSettings
    store: Store
    vault: TokenVault
    trust: Trust
    server: PtpServer | None
    _registration_now: Registration | None
    _client: OcpiClient | None
    _http: aiohttp.ClientSession | None
    _accepted: asyncio.Event

    def _stored(self) -> Registration | None:
        stored = self.store.registration()
        if stored is None:
            return None
        if (
            self.settings.registration == "gateway"
            and stored["versions_url"] != self.settings.versions_url
        ):
            return None  # registered with another CPO before: register again
        return Registration(
            self.vault.open(stored["token_b"]),
            self.vault.open(stored["token_c"]),
            stored["versions_url"],
            VersionDetails.model_validate(stored["endpoints"]),
        )

    def _status(self, registered: bool, reason: str) -> None:
        self.store.set_upstream_status(registered, reason)
        if not registered:
            _LOGGER.warning("upstream.not_registered", extra={"reason": reason})

    def _party(self) -> tuple[str, str]:
        return self.settings.country_code, self.settings.party_id

    def client(self, http: aiohttp.ClientSession, token: str) -> OcpiClient:
        """The one way this worker talks to the CPO: its trust rules and timeout on every call."""
        return OcpiClient(http, token, self.settings.timeout_s, trust=self.trust)

    def _current(self) -> Registration:
        if self._registration_now is None:
            raise UpstreamError("not registered with the CPO")
        return self._registration_now

    def ours(self) -> Credentials:
        return self._credentials(self._current().token_b)

    def _credentials(self, token_b: str) -> Credentials:
        """Our credentials as the CPO gets them, with ``token_b`` (what the CPO calls us with)."""
        return our_credentials(
            token_b,
            self.settings.public_url,
            self._party(),
            self.settings.business_name,
            self.settings.interop.business_website,
        )

    def rotate(self, theirs: Credentials) -> Credentials:
        """The CPO sent new credentials (its new token C): store them, issue a new token B."""
        reg = Registration(new_token(), theirs.token, theirs.url, self._current().endpoints)
        self._save(reg)
        if self._client is not None:
            self._client.token = reg.token_c
        return self.ours()

    async def accept(self, theirs: Credentials) -> Credentials:
        """CPO-initiated registration: read the CPO's versions with its token, then answer."""
        if self._http is None:
            raise UpstreamError("the upstream worker is not running")
        if not self.settings.allowed_hosts and not self.trust.origins:
            self.trust.add(
                theirs.url
            )  # first contact, authenticated by token A: the CPO's origin from now on
        reg = await accept(self.client(self._http, theirs.token), theirs)
        self._save(reg, versions_url=theirs.url)
        self._status(True, f"registered by the CPO ({theirs.url})")
        self._accepted.set()
        return self.ours()

    async def rotate_ours(self) -> None:
        """Gateway-initiated rotation: a new token B (accepted by our server before the PUT, for
        the CPO's callback), the CPO's new token C back."""
        current = self._current()
        if self._client is None:
            raise UpstreamError("not connected to the CPO")
        token_b = new_token()
        if self.server is not None:
            self.server.accept_token(token_b)
        ours = self._credentials(token_b)
        reg = await rotate(self._client, current, ours)
        stored = self.store.registration()
        self._save(reg, versions_url=stored["versions_url"] if stored else None)
        self._client.token = reg.token_c
        if self.server is not None:
            self.server.set_token(reg.token_b)

    def forget(self) -> None:
        self.store.forget_registration()
        self._registration_now = None
        self._status(False, "the CPO ended the registration (DELETE credentials)")

    def _save(self, reg: Registration, versions_url: str | None = None) -> None:
        self.store.save_registration(
            versions_url or self.settings.versions_url or reg.peer_versions_url,
            self.vault.seal(reg.token_b),
            self.vault.seal(reg.token_c),
            reg.endpoints.model_dump(mode="json"),
        )
        self._registration_now = reg
