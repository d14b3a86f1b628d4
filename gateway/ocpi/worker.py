"""The upstream worker: register with the CPO once (tokens encrypted at rest), then drain
the outbox for as long as the daemon runs. If the CPO is unreachable the worker fails and
the supervisor restarts it with backoff; charging and payments go on meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from datetime import datetime

import aiohttp
from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken

from gateway.errors import ConfigError, UpstreamError
from gateway.ocpi.charger import OcpiChargerLink, session_id_of
from gateway.ocpi.client import OcpiClient
from gateway.ocpi.handshake import Registration, our_credentials, register
from gateway.ocpi.models import Cdr, Credentials, VersionDetails
from gateway.ocpi.pusher import OutboxPusher
from gateway.ocpi.server import PtpServer
from gateway.ocpi.tariffs import pull_tariffs
from gateway.payments.tariff import Tariff
from gateway.settings import UpstreamSettings
from gateway.store import Store

_LOGGER = logging.getLogger(__name__)
TARIFF_REFRESH_S = 900.0
TariffSink = Callable[[dict[str, Tariff], dict[str, Tariff]], None]


class TokenVault:
    """Encrypts tokens for the store; a wrong key is a configuration error, never a silent reset."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode("ascii"))
        except (ValueError, TypeError):
            raise ConfigError("upstream.key", ["not a Fernet key (32 url-safe base64 bytes)"]) from None

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ConfigError(
                "upstream.key", ["cannot decrypt the stored OCPI tokens: the key changed (restore it or re-register)"]
            ) from None


class UpstreamWorker:
    name = "upstream"

    def __init__(
        self,
        settings: UpstreamSettings,
        site: str,
        store: Store,
        clock: Callable[[], datetime],
        charger: OcpiChargerLink | None = None,
        on_tariffs: TariffSink | None = None,
        on_fiscal: Callable[[str, tuple[str, ...], str], None] | None = None,
    ) -> None:
        if settings.key is None or settings.token_a is None:
            raise ConfigError("upstream", ["an enabled upstream needs token_a and key"])
        self.settings = settings
        self.site = site
        self.store = store
        self.clock = clock
        self.vault = TokenVault(settings.key.reveal())
        self.charger = charger
        self.on_tariffs = on_tariffs
        self.on_fiscal = on_fiscal
        self._registration_now: Registration | None = None
        self._client: OcpiClient | None = None
        self.pusher: OutboxPusher | None = None

    async def _registration(self, http: aiohttp.ClientSession) -> Registration:
        stored = self.store.registration()
        if stored is not None and stored["versions_url"] == self.settings.versions_url:
            return Registration(
                self.vault.open(stored["token_b"]), self.vault.open(stored["token_c"]), stored["versions_url"],
                VersionDetails.model_validate(stored["endpoints"]),
            )  # fmt: skip
        token_a = self.settings.token_a.reveal() if self.settings.token_a else ""
        reg = await register(
            OcpiClient(http, token_a, self.settings.timeout_s), self.settings.versions_url, self.settings.public_url,
            (self.settings.country_code, self.settings.party_id), self.settings.business_name,
        )  # fmt: skip
        self._save(reg)
        _LOGGER.info("upstream.registered", extra={"versions_url": self.settings.versions_url})
        return reg

    async def run(self, stopping: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            reg = await self._registration(http)
            self._registration_now = reg
            client = self._client = OcpiClient(http, reg.token_c, self.settings.timeout_s)
            runner = await self._serve(reg.token_b) if self.settings.listen else None
            try:
                if self.charger is not None:
                    commands = reg.endpoints.url("commands", "RECEIVER")
                    if commands is None:
                        raise UpstreamError("the CPO publishes no commands endpoint: charger mode ocpi cannot start")
                    base = self.settings.public_url.removesuffix("/ocpi/versions")
                    self.charger.bind(client, commands, f"{base}/ocpi/ptp/2.3.0/commands")
                    self._replay_cdrs(self.charger)
                self.pusher = OutboxPusher(self.store, client, reg.payments_url(""), self.clock,
                                           commands_url=reg.endpoints.url("commands", "RECEIVER"))  # fmt: skip
                puller = asyncio.create_task(self._pull_tariffs(client, reg, stopping))
                try:
                    await self.pusher.run(stopping)
                finally:
                    puller.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await puller
            finally:
                if runner is not None:
                    await runner.cleanup()

    def _replay_cdrs(self, charger: OcpiChargerLink) -> None:
        """A CDR stored just before a crash may never have reached the engine: hand every CDR of a
        session that is still open to it again (a second delivery is a no-op there)."""
        open_ids = {s["id"] for s in self.store.sessions(open_only=True, limit=100_000)}
        for message in self.store.inbox("cdr"):
            cdr = Cdr.model_validate(message["payload"])
            if session_id_of(cdr.authorization_reference) in open_ids:
                _LOGGER.info("upstream.cdr_replayed", extra={"cdr": cdr.id})
                charger.cdr_pushed(cdr)

    # ---- CredentialsKeeper: the CPO reads, rotates or ends our registration --------------------

    def _current(self) -> Registration:
        if self._registration_now is None:
            raise UpstreamError("not registered with the CPO")
        return self._registration_now

    def ours(self) -> Credentials:
        party = (self.settings.country_code, self.settings.party_id)
        return our_credentials(self._current().token_b, self.settings.public_url, party, self.settings.business_name)

    def rotate(self, theirs: Credentials) -> Credentials:
        """The CPO sent new credentials (its new token C): store them, issue a new token B."""
        reg = Registration(secrets.token_urlsafe(24), theirs.token, theirs.url, self._current().endpoints)
        self._save(reg)
        if self._client is not None:
            self._client.token = reg.token_c
        return self.ours()

    def forget(self) -> None:
        self.store.forget_registration()
        self._registration_now = None
        _LOGGER.warning("upstream.unregistered_by_cpo", extra={"versions_url": self.settings.versions_url})

    def _save(self, reg: Registration) -> None:
        self.store.save_registration(
            self.settings.versions_url, self.vault.seal(reg.token_b), self.vault.seal(reg.token_c),
            reg.endpoints.model_dump(mode="json"),
        )  # fmt: skip
        self._registration_now = reg

    async def _pull_tariffs(self, client: OcpiClient, reg: Registration, stopping: asyncio.Event) -> None:
        """The CPO's tariffs and which EVSE uses which, now and every TARIFF_REFRESH_S."""
        tariffs, locations = reg.endpoints.url("tariffs", "SENDER"), reg.endpoints.url("locations", "SENDER")
        if self.on_tariffs is None or tariffs is None or locations is None:
            return
        while not stopping.is_set():
            try:
                by_evse, catalog = await pull_tariffs(client, tariffs, locations)
            except (UpstreamError, ValueError) as exc:
                _LOGGER.warning("upstream.tariffs_failed", extra={"error": str(exc)})
            else:
                self.on_tariffs(by_evse, catalog)
                _LOGGER.info("upstream.tariffs", extra={"tariffs": len(catalog), "evses": len(by_evse)})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TARIFF_REFRESH_S):
                    await stopping.wait()

    async def _serve(self, token_b: str) -> web.AppRunner:
        """Our OCPI endpoints (versions, payments Sender), for the CPO, authorised by token B."""
        host, _, port = self.settings.listen.rpartition(":")
        base = self.settings.public_url.removesuffix("/ocpi/versions")
        server = PtpServer(self.store, token_b, base, self.site, self.clock, receiver=self.charger,
                           fiscal=self.on_fiscal, credentials=self)  # fmt: skip
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
        _LOGGER.info("upstream.serving", extra={"listen": self.settings.listen})
        return runner
