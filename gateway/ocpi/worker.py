"""The upstream worker: register with the CPO once (tokens encrypted at rest), then drain
the outbox for as long as the daemon runs. If the CPO is unreachable the worker fails and
the supervisor restarts it with backoff; charging and payments go on meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime

import aiohttp
from aiohttp import web

from gateway.acquirer.webhook_server import WebhookReceiver
from gateway.errors import ConfigError, UpstreamError
from gateway.ocpi.charger import OcpiChargerLink, session_id_of
from gateway.ocpi.client import OcpiClient, Trust
from gateway.ocpi.handshake import Registration, new_token, register
from gateway.ocpi.models import Cdr
from gateway.ocpi.pusher import CUSTOM, OutboxPusher
from gateway.ocpi.registration_keeper import RegistrationKeeper, TokenVault
from gateway.ocpi.server import PtpServer
from gateway.ocpi.tariffs import pull_tariffs
from gateway.payments.events import FiscalDataArrived
from gateway.payments.tariff import Tariff
from gateway.runtime.connections import ConnectionGuard, GuardedSite
from gateway.settings import UpstreamSettings
from gateway.store import Store

_LOGGER = logging.getLogger(__name__)
TARIFF_REFRESH_S = 900.0
TariffSink = Callable[[dict[str, Tariff], dict[str, Tariff]], None]


class UpstreamWorker(RegistrationKeeper):
    name = "upstream"

    def __init__(
        self,
        settings: UpstreamSettings,
        site: str,
        store: Store,
        clock: Callable[[], datetime],
        charger: OcpiChargerLink | None = None,
        on_tariffs: TariffSink | None = None,
        on_fiscal: Callable[[FiscalDataArrived], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        webhooks: Sequence[WebhookReceiver] = (),
    ) -> None:
        self.webhooks = webhooks  # acquirer webhook receivers, served beside our OCPI endpoints
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
        self.on_failure = on_failure
        self._registration_now: Registration | None = None
        self._client: OcpiClient | None = None
        self._http: aiohttp.ClientSession | None = None
        self._accepted = asyncio.Event()
        self.pusher: OutboxPusher | None = None
        self.server: PtpServer | None = None
        self.bound_port: int | None = None
        self.trust = Trust([])

    async def _register(
        self, http: aiohttp.ClientSession, token_b: str, stopping: asyncio.Event
    ) -> Registration | None:
        """Register: POST our credentials (gateway-initiated), or wait for the CPO's POST
        (CPO-initiated). Our server already answers with token B, for the CPO's callback."""
        if self.settings.registration == "cpo":
            self._status(False, "waiting for the CPO to register (with the token A it was given)")
            waiting = asyncio.create_task(self._accepted.wait())
            stop = asyncio.create_task(stopping.wait())
            await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            stop.cancel()
            return self._registration_now
        token_a = self.settings.token_a.reveal() if self.settings.token_a else ""
        ours = self._credentials(token_b)
        try:
            reg = await register(self.client(http, token_a), self.settings.versions_url, ours)
        except (UpstreamError, ValueError) as exc:
            self._status(False, f"the CPO refused or failed the registration: {exc}")
            raise
        self._save(reg)
        _LOGGER.info("upstream.registered", extra={"versions_url": self.settings.versions_url})
        return reg

    def _trust(self) -> Trust:
        origins = [self.settings.versions_url, *self.settings.allowed_hosts]
        stored = self.store.registration()
        if stored is not None:
            origins.append(stored["versions_url"])
        return Trust([o for o in origins if o], allow_http=self.settings.allow_insecure_http)

    def _ssl(self) -> ssl.SSLContext | aiohttp.Fingerprint | None:
        if self.settings.pin_sha256:
            return aiohttp.Fingerprint(bytes.fromhex(self.settings.pin_sha256))
        if self.settings.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.settings.ca_file))
        return None

    async def run(self, stopping: asyncio.Event) -> None:
        if self.settings.allow_insecure_http:
            _LOGGER.warning(
                "upstream.INSECURE_HTTP",
                extra={
                    "warning": "OCPI over plain http: tokens travel in clear; "
                    "allow_insecure_http is for a lab only"
                },
            )
        self.trust = self._trust()
        connector = aiohttp.TCPConnector(ssl=self._ssl() or True)
        async with aiohttp.ClientSession(connector=connector) as http:
            self._http = http
            stored = self._stored()
            self._registration_now = stored
            token_b = (
                stored.token_b if stored else new_token()
            )  # not stored until the CPO accepts it
            runner = (
                await self._serve(token_b, registering=stored is None)
                if self.settings.listen
                else None
            )
            try:
                reg = stored or await self._register(http, token_b, stopping)
                if reg is None:
                    return  # stopped while waiting for the CPO
                self._status(True, f"registered with {reg.peer_versions_url}")
                if self.server is not None:
                    self.server.set_token(reg.token_b)
                await self._work(http, reg, stopping)
            finally:
                if runner is not None:
                    await runner.cleanup()
                self.server = None

    async def _work(
        self, http: aiohttp.ClientSession, reg: Registration, stopping: asyncio.Event
    ) -> None:
        client = self._client = self.client(http, reg.token_c)
        if self.charger is not None:
            commands = reg.endpoints.url("commands", "RECEIVER")
            if commands is None:
                raise UpstreamError(
                    "the CPO publishes no commands endpoint: charger mode ocpi cannot start"
                )
            base = self.settings.public_url.removesuffix("/ocpi/versions")
            self.charger.bind(client, commands, f"{base}/ocpi/ptp/2.3.0/commands")
            self._replay_cdrs(self.charger)
        self.pusher = OutboxPusher(
            self.store,
            client,
            reg.payments_url(""),
            self.clock,
            commands_url=reg.endpoints.url("commands", "RECEIVER"),
            custom_urls={m: reg.endpoints.url(m, "RECEIVER") for m in set(CUSTOM.values())},
            interop=self.settings.interop,
            on_failure=self.on_failure,
        )
        puller = asyncio.create_task(self._pull_tariffs(client, reg, stopping))
        try:
            await self.pusher.run(stopping)
        finally:
            puller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await puller

    def _replay_cdrs(self, charger: OcpiChargerLink) -> None:
        """A CDR stored just before a crash may never have reached the engine: hand it to it
        again, oldest first (the first CDR bills, a later one corrects the price). A first CDR
        goes again only to a session still open; a correction to any session (the engine keys
        it by the CDR's id, so a second delivery is a no-op there)."""
        open_ids = {s["id"] for s in self.store.sessions(open_only=True, limit=100_000)}
        first: set[str] = set()
        for message in reversed(self.store.inbox("cdr")):
            cdr = Cdr.model_validate(message["payload"])
            ours = session_id_of(cdr.authorization_reference)
            if ours is None:
                continue
            correction = ours in first
            first.add(ours)
            if correction or ours in open_ids:
                _LOGGER.info("upstream.cdr_replayed", extra={"cdr": cdr.id})
                charger.cdr_pushed(cdr)

    async def _pull_tariffs(
        self, client: OcpiClient, reg: Registration, stopping: asyncio.Event
    ) -> None:
        """The CPO's tariffs and which EVSE uses which, now and every TARIFF_REFRESH_S."""
        tariffs, locations = (
            reg.endpoints.url("tariffs", "SENDER"),
            reg.endpoints.url("locations", "SENDER"),
        )
        if self.on_tariffs is None or tariffs is None or locations is None:
            return
        while not stopping.is_set():
            try:
                by_evse, catalog = await pull_tariffs(client, tariffs, locations, self.clock())
            except (UpstreamError, ValueError) as exc:
                _LOGGER.warning("upstream.tariffs_failed", extra={"error": str(exc)})
            else:
                self.on_tariffs(by_evse, catalog)
                _LOGGER.info(
                    "upstream.tariffs", extra={"tariffs": len(catalog), "evses": len(by_evse)}
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TARIFF_REFRESH_S):
                    await stopping.wait()

    def _server_tls(self) -> ssl.SSLContext | None:
        """Our OCPI server's own certificate, when it is not behind the site's TLS proxy."""
        if self.settings.tls_cert is None or self.settings.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.NamedTemporaryFile(
            "w", suffix=".pem"
        ) as key:  # ssl wants a file; it lives only here
            key.write(self.settings.tls_key.reveal())
            key.flush()
            context.load_cert_chain(str(self.settings.tls_cert), key.name)
        return context

    async def _serve(self, token_b: str, *, registering: bool) -> web.AppRunner:
        """Our OCPI endpoints for the CPO, up before any registration step: authorised by token B
        (and, while the CPO is to register with us, its credentials POST by token A)."""
        host, _, port = self.settings.listen.rpartition(":")
        base = self.settings.public_url.removesuffix("/ocpi/versions")
        token_a = None
        if (
            registering
            and self.settings.registration == "cpo"
            and self.settings.token_a is not None
        ):
            token_a = self.settings.token_a.reveal()
        self.server = PtpServer(
            self.store,
            token_b,
            base,
            self.site,
            self.clock,
            receiver=self.charger,
            fiscal=self.on_fiscal,
            credentials=self,
            registration_token=token_a,
        )
        app = self.server.app()
        for receiver in self.webhooks:
            receiver.mount(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # the same guard as the local API: a connection cap, a header timeout (slow-loris)
        site = GuardedSite(
            runner,
            host or "127.0.0.1",
            int(port),
            ConnectionGuard(),
            ssl_context=self._server_tls(),
        )
        await site.start()
        self.bound_port = site.port
        _LOGGER.info(
            "upstream.serving", extra={"listen": self.settings.listen, "port": self.bound_port}
        )
        return runner
