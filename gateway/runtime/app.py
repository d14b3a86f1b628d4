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
from typing import Any

from drivers.base import PaymentTerminal
from gateway import __version__
from gateway.acquirer.webhook_server import webhook_receivers
from gateway.errors import GatewayError, QueueFull, StoreError, Unavailable
from gateway.ocpi.charger import OcpiChargerLink
from gateway.ocpi.tariffs import chargeable
from gateway.ocpi.worker import UpstreamWorker
from gateway.payments.charger import ChargerLink
from gateway.payments.events import FiscalDataArrived
from gateway.payments.preauth import Target
from gateway.payments.record import compact
from gateway.payments.tariff import Tariff
from gateway.runtime import store_figures
from gateway.runtime.admission import PayAnswer
from gateway.runtime.api import ApiWorker
from gateway.runtime.engine_setup import build_engine
from gateway.runtime.engine_worker import EngineWorker
from gateway.runtime.metrics import Metrics
from gateway.runtime.mqtt_charger import MqttChargerLink
from gateway.runtime.sdnotify import Notifier
from gateway.runtime.supervisor import Supervisor, Worker
from gateway.settings import Settings, journal_signing_key
from gateway.store import ApiOrigin, Store
from gateway.store.db import quick_check_path
from gateway.store.lock import DatabaseLock

_LOGGER = logging.getLogger(__name__)
_STATUS_EVERY_S = 10.0


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


def _canonical(target: Target | None) -> tuple[str | None, int | None] | None:
    """A target as the idempotency fingerprint compares it: 20 and 20.0 kWh are one target."""
    if target is None:
        return None
    kwh = None if target.kwh is None else format(target.kwh.normalize(), "f")
    return kwh, target.amount_minor


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Daemon:
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
            self.engine.metrics = self.metrics
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

    def upstream_state(self) -> tuple[bool, str] | None:
        """(registered, why) when an upstream is configured."""
        if not self.settings.upstream.enabled:
            return None
        status = self.store.upstream_status()
        if status is None:
            return False, "the upstream worker has not registered yet"
        return status["registered"], status["reason"]

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        ok = self.supervisor.all_up()
        details: dict[str, Any] = {}
        if self.engine is not None and self.engine.terminal_state:
            details["terminals"] = {
                name: "ok" if up else f"unavailable: {why}"
                for name, (up, why) in self.engine.terminal_state.items()
            }
            ok = ok and all(up for up, _ in self.engine.terminal_state.values())
        upstream = self.upstream_state()
        if upstream is not None:
            registered, why = upstream
            details["upstream"] = why if registered else f"not registered — {why}"
            if not registered and self.settings.charger.mode == "ocpi":
                ok = False  # no session can start without the CPO
        if self.store_fault is not None:
            details["store"] = self.store_fault
            ok = False
        return ok, details

    def snapshot(self) -> dict[str, Any]:
        backlog = self.store.outbox.backlog()
        now = datetime.now(UTC)
        return {
            "version": __version__,
            "site": self.settings.site.id,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "workers": [
                {
                    "name": s.name,
                    "state": s.state,
                    "restarts": s.restarts,
                    "last_error": s.last_error,
                }
                for s in self.supervisor.status.values()
            ],
            "terminals": [
                {"id": t.id, "device": t.device, "protocol": t.protocol}
                for t in self.settings.terminals
            ],
            "upstream": self.healthy()[1].get("upstream"),
            "open_sessions": self.store.count_open_sessions(),
            "outbox": {
                "pending": backlog.pending,
                "dead": backlog.dead,
                "oldest_age_s": round((now - backlog.oldest_pending).total_seconds(), 1)
                if backlog.oldest_pending
                else None,
            },
        }

    def _status_line(self) -> str:
        up = sum(1 for s in self.supervisor.status.values() if s.state == "up")
        backlog = self.store.outbox.backlog()
        return (
            f"{up}/{len(self.supervisor.status)} workers up, "
            f"{self.store.count_open_sessions()} open sessions, outbox {backlog.pending} pending"
        )

    def _collect(self, metrics: Metrics) -> None:
        """In-memory figures (workers, terminals); the store's are read off the loop
        (``store_figures``)."""
        metrics.describe("evpay_worker_up", "gauge", "1 when the worker is running")
        metrics.describe("evpay_worker_restarts_total", "counter", "worker restarts after a crash")
        for s in self.supervisor.status.values():
            metrics.set("evpay_worker_up", 1.0 if s.state == "up" else 0.0, worker=s.name)
            metrics.set("evpay_worker_restarts_total", float(s.restarts), worker=s.name)
        metrics.describe(
            "evpay_terminal_up", "gauge", "1 when the terminal answered its last command"
        )
        if self.engine is not None:
            for name in self.terminals:
                up, _why = self.engine.terminal_state.get(name, (False, "not registered"))
                metrics.set("evpay_terminal_up", 1.0 if up else 0.0, terminal=name)
        metrics.describe(
            "evpay_terminal_command_seconds", "histogram", "terminal command duration, by operation"
        )
        metrics.describe(
            "evpay_upstream_failures_total", "counter", "failed deliveries to the CPO, by kind"
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

    def _request_payment(
        self,
        evse: str,
        idempotency_key: str | None = None,
        target: Target | None = None,
        client: str = "",
    ) -> PayAnswer:
        """The kiosk's request: stored as a session before 202, or refused at once with why.
        Idempotency keys are the client's own (two kiosks may both send "1"); a key used again
        with another request is refused 422, as Stripe does. The client id is stored with the
        session the request creates, in the same step."""
        if self.engine is None:
            return PayAnswer(409, "no payment engine runs on this site")
        if "kiosk" not in self.settings.charger.start_paths:
            return PayAnswer(
                403, "sessions do not start from the kiosk at this site ([charger] start_paths)"
            )
        upstream = self.upstream_state()
        if self.settings.charger.mode == "ocpi" and upstream is not None and not upstream[0]:
            return PayAnswer(503, f"upstream: not registered — {upstream[1]}")
        request = hashlib.sha256(repr((evse, _canonical(target))).encode()).hexdigest()
        key_hash = None if idempotency_key is None else _sha256(idempotency_key)
        scoped = f"{client}\x00{idempotency_key}" if client and idempotency_key else idempotency_key
        try:
            if key_hash is not None:
                known = self.store.api_request(client, key_hash)
                if known is not None and known[1] != request:
                    return PayAnswer(
                        422,
                        "this Idempotency-Key was used with a different request "
                        f"(session {known[0]}): use a new key for a new request",
                    )
            with self.store.attributed(ApiOrigin(client, key_hash, request)):
                answer = self.engine.request_payment(evse, scoped, target)
        except StoreError as exc:  # disk full, read-only: nothing was stored, nothing will run
            self.store_fault = str(exc)
            _LOGGER.error("api.pay_not_stored", extra={"evse": evse, "error": str(exc)})  # noqa: TRY400 - the message says it all
            return PayAnswer(503, f"the payment could not be stored: {exc}")
        if answer.status == 202:
            self.store_fault = None  # it writes again (space was freed)
        # the busy session's id is told only to the client that started it: it is the key to
        # forging that session's charger messages (issue 27 attack)
        busy = answer.session_id if answer.status == 409 else None
        if busy is not None and self.store.session_origin(busy) != client:
            answer = replace(answer, session_id=None, state=None)
        return answer

    def _fatal(self, exc: BaseException) -> None:
        self.fatal = exc
        self.request_stop(f"fatal: {exc}")

    def request_stop(self, reason: str) -> None:
        _LOGGER.info("daemon.stop_requested", extra={"reason": reason})
        if self._stop_requested is not None:
            self._stop_requested.set()

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

    async def _sign_journal(self) -> None:
        """Sign the journal head at the configured interval (a no-op when nothing was added)."""
        while True:
            await asyncio.sleep(self.settings.journal.checkpoint_interval_s)
            try:
                self._checkpoint_journal()
            except StoreError as exc:
                self._fatal(exc)
                return

    async def _check_store_after_ready(self) -> None:
        """SQLite's quick_check of the database, once the daemon is READY: a damaged file
        stops the daemon (74) as it would have at the start, without holding up the start."""
        await self.ready.wait()
        started = time.monotonic()
        try:
            await asyncio.to_thread(quick_check_path, self.store.path)
        except StoreError as exc:
            _LOGGER.error("store.check_failed", extra={"error": str(exc)})  # noqa: TRY400 - the message says it all
            self._fatal(exc)
            return
        _LOGGER.info("store.checked", extra={"seconds": round(time.monotonic() - started, 3)})

    async def _retention(self, days: int) -> None:
        """Hourly: archive what is older than the retention period, a cut at a time with the
        loop free between cuts, so the database stays bounded on the controller's disk."""
        assert self.journal_key is not None  # noqa: S101 - started only with the key
        while True:
            try:
                while (
                    done := self.store.prune_older_than(
                        self.journal_key,
                        days=days,
                        archive_dir=self.settings.journal.archive_dir,
                        compact=compact,
                    )
                ).anything:
                    _LOGGER.info(
                        "journal.archived",
                        extra={
                            "to_row": done.cut_seq,
                            "rows": done.journal_rows,
                            "archive": str(done.archive),
                            "sessions_compacted": done.sessions_compacted,
                        },
                    )
                    await asyncio.sleep(0)
            except StoreError as exc:
                self._fatal(exc)
                return
            except GatewayError as exc:  # e.g. a journal that does not verify: no cut, said loudly
                _LOGGER.error("journal.retention_refused", extra={"error": str(exc)})  # noqa: TRY400
            await asyncio.sleep(3600)

    def _checkpoint_journal(self) -> None:
        if self.journal_key is None:
            return
        cp = self.store.sign_journal(self.journal_key)
        if cp is not None:
            _LOGGER.info(
                "journal.checkpoint",
                extra={"checkpoint": cp.id, "seq": cp.seq, "head": cp.head_hash[:16]},
            )

    def _essential_up(self) -> bool:
        """The parts without which no payment can be taken: the API and the engine."""
        essential = [s for s in self.supervisor.status.values() if s.name in ("api", "engine")]
        return all(s.state == "up" for s in essential)

    async def _heartbeat(self) -> None:
        """READY once every worker is up; then STATUS and WATCHDOG from the event loop. The
        watchdog is fed only while the essential parts are up; the database file is checked
        every tick (deleted or replaced: stop with 74 rather than acknowledge into nothing)."""
        interval = self.notifier.watchdog_interval
        tick = min(interval, 1.0) if interval else 0.2
        last_ping = last_status = 0.0
        while True:
            try:
                self.store.check_file()
            except StoreError as exc:
                _LOGGER.error("daemon.store_gone", extra={"error": str(exc)})  # noqa: TRY400 - the message says it all
                self._fatal(exc)
                return
            now = time.monotonic()
            registered = self.engine is None or self.engine.registered.is_set()
            if (
                not self.ready.is_set()
                and self.supervisor.all_up()
                and self.api.listening.is_set()
                and registered
            ):
                self.ready.set()
                self.notifier.ready(self._status_line())
                _LOGGER.info("daemon.ready", extra={"api_port": self.api.bound_port})
            if interval and now - last_ping >= interval and self._essential_up():
                self.notifier.watchdog()
                last_ping = now
            if self.ready.is_set() and now - last_status >= _STATUS_EVERY_S:
                self.notifier.status(self._status_line())
                last_status = now
            await asyncio.sleep(tick)
