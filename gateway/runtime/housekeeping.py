"""The daemon's background duties: READY, STATUS and WATCHDOG from the event loop, the database
file checked every tick and after READY, the journal head signed, old rows archived; and how a
fatal error stops it."""

from __future__ import annotations

import asyncio
import logging
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import GatewayError, StoreError
from gateway.payments.record import compact
from gateway.runtime.api import ApiWorker
from gateway.runtime.daemon_health import DaemonHealth
from gateway.runtime.sdnotify import Notifier
from gateway.store.db import quick_check_path

_LOGGER = logging.getLogger("gateway.runtime.app")  # the daemon's log name, as before


_STATUS_EVERY_S = 10.0


class Housekeeping(DaemonHealth):
    journal_key: Ed25519PrivateKey | None
    notifier: Notifier
    api: ApiWorker
    ready: asyncio.Event
    fatal: BaseException | None
    _stop_requested: asyncio.Event | None

    def _fatal(self, exc: BaseException) -> None:
        self.fatal = exc
        self.request_stop(f"fatal: {exc}")

    def request_stop(self, reason: str) -> None:
        _LOGGER.info("daemon.stop_requested", extra={"reason": reason})
        if self._stop_requested is not None:
            self._stop_requested.set()

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
            registered = self.engine is None or self.engine.status.registered.is_set()
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
