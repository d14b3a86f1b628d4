"""What the running daemon says about itself: healthy or not and why (/health), its status
snapshot (`evpay status`), the one-line STATUS for systemd and its in-memory metrics."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from drivers.base import PaymentTerminal
from gateway import __version__
from gateway.runtime.engine_worker import EngineWorker
from gateway.runtime.metrics import Metrics
from gateway.runtime.supervisor import Supervisor
from gateway.settings import Settings
from gateway.store import Store


class DaemonHealth:
    """The daemon's parts as its reports read them (set by ``Daemon``)."""

    settings: Settings
    store: Store
    supervisor: Supervisor
    engine: EngineWorker | None
    terminals: dict[str, PaymentTerminal]
    store_fault: str | None
    _started: float

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
        if self.engine is not None and self.engine.status.terminal_state:
            details["terminals"] = {
                name: "ok" if up else f"unavailable: {why}"
                for name, (up, why) in self.engine.status.terminal_state.items()
            }
            ok = ok and all(up for up, _ in self.engine.status.terminal_state.values())
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
                up, _why = self.engine.status.terminal_state.get(name, (False, "not registered"))
                metrics.set("evpay_terminal_up", 1.0 if up else 0.0, terminal=name)
        metrics.describe(
            "evpay_terminal_command_seconds", "histogram", "terminal command duration, by operation"
        )
        metrics.describe(
            "evpay_upstream_failures_total", "counter", "failed deliveries to the CPO, by kind"
        )
