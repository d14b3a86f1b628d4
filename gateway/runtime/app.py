"""The composition root: builds the daemon's parts from Settings and runs them.

This is the only place that wires layers together. Everything below it is either a
sans-I/O core or a worker that feeds it; everything above it is the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from drivers.base import PaymentTerminal
from gateway import __version__
from gateway.acquirer.webhook_server import webhook_receivers
from gateway.errors import GatewayError, QueueFull, StoreError, Unavailable
from gateway.ocpi.charger import OcpiChargerLink
from gateway.ocpi.tariffs import chargeable, step_size_warnings
from gateway.ocpi.worker import UpstreamWorker
from gateway.payments.charger import ChargerLink
from gateway.payments.events import FiscalDataArrived
from gateway.payments.tariff import Tariff
from gateway.runtime import store_figures
from gateway.runtime.api import ApiWorker
from gateway.runtime.engine_setup import build_engine
from gateway.runtime.engine_worker import EngineWorker
from gateway.runtime.housekeeping import Housekeeping
from gateway.runtime.kiosk_payments import KioskPayments
from gateway.runtime.metrics import Metrics
from gateway.runtime.mqtt_charger import MqttChargerLink
from gateway.runtime.sdnotify import Notifier
from gateway.runtime.supervisor import Supervisor, Worker
from gateway.settings import Settings, journal_signing_key
from gateway.store import Store
from gateway.store.lock import DatabaseLock

_LOGGER = logging.getLogger(__name__)


def api_client_hashes(settings: Settings) -> dict[str, str]:
    """SHA-256 of each API client's token -> client id (the token itself is not kept)."""
    hashes = {}
    for client in settings.api.clients:
        digest = client.token_sha256
        if client.token is not None:
            digest = hashlib.sha256(client.token.reveal().encode()).hexdigest()
        hashes[str(digest)] = client.id
    return hashes


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Daemon(KioskPayments, Housekeeping):
    def __init__(
        self,
        settings: Settings,
        *,
        notifier: Notifier | None = None,
        extra_workers: Sequence[Worker] = (),
        charger: ChargerLink | None = None,
    ) -> None:
        self.settings = settings
        self.journal_key = journal_signing_key(
            settings
        )  # read before anything starts: a bad key stops here
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.lock = DatabaseLock(settings.storage.path)
        try:
            settings.storage.path.parent.mkdir(parents=True, exist_ok=True)
            # a second daemon on this database stops here, naming the first one's pid
            self.lock.acquire()
        except OSError as exc:  # a read-only or foreign directory: one line, exit 74
            raise StoreError(
                f"{settings.storage.path.parent}: cannot use the database directory "
                f"({exc.strerror or exc}); check its owner, mode and that its file system is "
                "mounted read-write"
            ) from None
        if self.lock.unclean:
            why = "the last daemon did not stop cleanly"
            _LOGGER.warning(
                "store.check_before_start", extra={"db": str(settings.storage.path), "why": why}
            )
        try:
            # After an unclean end (killed, power cut) the file is checked before anything runs;
            # otherwise after READY, in the background (it reads the whole file).
            self.store = Store.open(
                settings.storage.path,
                busy_timeout_ms=settings.storage.busy_timeout_ms,
                check=self.lock.unclean,
                group=settings.storage.group,
            )
        except BaseException:
            self.lock.release()
            raise
        self._started = time.monotonic()
        self.api = ApiWorker(
            settings.api.host,
            settings.api.port,
            self.metrics,
            self.snapshot,
            self.healthy,
            self._request_payment,
            client_hashes=api_client_hashes(settings),
            allowed_origins=settings.api.allowed_origins,
        )
        workers: list[Worker] = [self.api, *extra_workers]
        self.engine: EngineWorker | None = None
        self.terminals: dict[str, PaymentTerminal] = {}
        self.charger: ChargerLink | None = None
        self.upstream: UpstreamWorker | None = None
        if settings.charger.enabled and settings.charger.evses:
            self.engine, self.terminals, self.charger = build_engine(
                settings, self.store, _utcnow, charger
            )
            self.engine.status.metrics = self.metrics
            workers.append(self.engine)
            if isinstance(self.charger, MqttChargerLink):
                workers.append(self.charger)  # the broker connection is a supervised worker
        if settings.upstream.enabled:
            link = self.charger if isinstance(self.charger, OcpiChargerLink) else None
            self.upstream = UpstreamWorker(
                settings.upstream,
                settings.site.id,
                self.store,
                _utcnow,
                link,
                self._apply_tariffs,
                self._fiscal_data,
                on_failure=lambda kind: self.metrics.inc(
                    "evpay_upstream_failures_total", kind=kind
                ),
                webhooks=webhook_receivers(
                    settings,
                    self.store,
                    _utcnow,
                    self.engine.acquirers.wake if self.engine and self.engine.acquirers else None,
                ),
            )
            workers.insert(1, self.upstream)
        self.supervisor = Supervisor(
            workers,
            settings.daemon.restart_backoff_min_s,
            settings.daemon.restart_backoff_max_s,
            on_fatal=self._fatal,
            fatal=(StoreError,),
        )
        self.fatal: BaseException | None = None
        self.store_fault: str | None = None  # the last write the store refused (disk full)
        self.ready = asyncio.Event()
        self._stop_requested: asyncio.Event | None = None
        self.metrics.add_collector(self._collect)
        self.metrics.add_reader(
            store_figures.reader(settings.storage.path, settings.storage.busy_timeout_ms)
        )

    def _apply_tariffs(self, by_evse: dict[str, Tariff], catalog: dict[str, Tariff]) -> None:
        """The CPO's tariffs win over the configured ones for the EVSEs it names; sessions
        already running keep the tariff they started with (it stays in the catalog)."""
        if self.engine is None:
            return
        terminals = {
            e.id: (e.terminal, self.settings.terminal_currency(e.terminal))
            for e in self.settings.charger.evses
        }
        by_evse, refused = chargeable(by_evse, terminals)
        for r in refused:  # the EVSE keeps its tariff; the CPO is told why its own is not used
            if self.store.apply(r.step()):
                _LOGGER.warning("upstream.tariff_refused", extra=r.payload())
        for warning in step_size_warnings(catalog):  # priced as OCPI says; the operator is told
            if self.store.apply(warning):
                _LOGGER.warning("upstream.tariff_step_size", extra=dict(warning.journal[0].data))
        policy = self.engine.host.policy
        self.engine.host.policy = replace(
            policy, tariffs={**policy.tariffs, **by_evse}, catalog={**policy.catalog, **catalog}
        )

    def _fiscal_data(self, event: FiscalDataArrived) -> None:
        if self.engine is None:
            return
        try:
            self.engine.submit(event)
        except QueueFull as exc:  # it is in the inbox; the refusal is said, not swallowed
            _LOGGER.warning(
                "engine.queue_full",
                extra={"queue": exc.queue, "session": event.session_id, "reason": str(exc)},
            )

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or request_stop); 0 after a graceful drain."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
        _LOGGER.info(
            "daemon.starting",
            extra={
                "version": __version__,
                "site": self.settings.site.id,
                "db": str(self.store.path),
            },
        )
        try:
            await self._claim_ports()
        except BaseException:
            self.store.close()
            self.lock.release()
            raise
        self.supervisor.start()
        background = [asyncio.create_task(self._heartbeat(), name="heartbeat")]
        if not self.lock.unclean:
            background.append(
                asyncio.create_task(self._check_store_after_ready(), name="store-check")
            )
        if self.journal_key is not None:
            background.append(asyncio.create_task(self._sign_journal(), name="journal-checkpoints"))
            if (days := self.settings.journal.retention_days) is not None:
                background.append(asyncio.create_task(self._retention(days), name="retention"))
        try:
            await self._stop_requested.wait()
        finally:
            self.notifier.stopping()
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.supervisor.stop(self.settings.daemon.shutdown_grace_s)
            for terminal in self.terminals.values():
                await terminal.close()
            if self.fatal is None:
                self._checkpoint_journal()  # the last head is signed at shutdown
                self.store.checkpoint()
            closed = False
            with contextlib.suppress(StoreError):
                self.store.close()
                closed = True
            self.lock.release(clean=closed and self.fatal is None)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            _LOGGER.info("daemon.stopped")
        if isinstance(self.fatal, GatewayError):
            raise self.fatal  # the CLI prints it and exits with its code (74 for the store)
        return 0

    async def _claim_ports(self) -> None:
        """Bind what the daemon serves before anything runs: a busy port fails the start (69)."""
        await self.api.bind()
        listen = self.settings.upstream.listen if self.settings.upstream.enabled else ""
        if listen:
            host, _, port = listen.rpartition(":")
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host or "127.0.0.1", int(port)))
                except OSError as exc:
                    raise Unavailable(
                        f"upstream: cannot listen on {listen}: {exc.strerror or exc}; free the "
                        f"port or change "
                        "[upstream] listen"
                    ) from None
