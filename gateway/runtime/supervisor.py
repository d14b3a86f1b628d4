"""Supervision of the daemon's workers: a crashed worker is logged and restarted with
exponential backoff while the others keep serving; a stop lets every worker finish or park
its in-flight step within a grace period before it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

_LOGGER = logging.getLogger(__name__)


class Worker(Protocol):
    """A long-running part of the daemon. ``run`` returns once ``stopping`` is set and its
    in-flight work is finished or safely parked; raising means it crashed."""

    name: str

    async def run(self, stopping: asyncio.Event) -> None: ...


@dataclass(slots=True)
class WorkerStatus:
    name: str
    state: str = "starting"  # starting, up, backoff, stopped
    restarts: int = 0
    last_error: str | None = None
    since: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(
        self,
        workers: list[Worker],
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        on_fatal: Callable[[BaseException], None] | None = None,
        fatal: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._workers = workers
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._on_fatal = on_fatal
        self._fatal = fatal
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.status: dict[str, WorkerStatus] = {w.name: WorkerStatus(w.name) for w in workers}

    def start(self) -> None:
        for worker in self._workers:
            self._tasks.append(
                asyncio.create_task(self._keep(worker), name=f"worker:{worker.name}")
            )

    @property
    def stopping(self) -> asyncio.Event:
        return self._stopping

    def all_up(self) -> bool:
        return all(s.state == "up" for s in self.status.values())

    async def stop(self, grace: float) -> None:
        self._stopping.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            _LOGGER.warning("worker.cancelled", extra={"worker": task.get_name(), "grace_s": grace})
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self, worker: Worker) -> None:
        status = self.status[worker.name]
        delay = self._backoff_min
        while not self._stopping.is_set():
            status.state, status.since = "up", time.monotonic()
            _LOGGER.info(
                "worker.started", extra={"worker": worker.name, "restarts": status.restarts}
            )
            started = time.monotonic()
            try:
                await worker.run(self._stopping)
            except asyncio.CancelledError:
                status.state = "stopped"
                raise
            except Exception as exc:  # the supervisor boundary: log, back off, restart
                status.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, self._fatal) and self._on_fatal is not None:
                    # Restarting cannot help (a full disk, a damaged database): stop the daemon.
                    _LOGGER.critical(
                        "worker.fatal", extra={"worker": worker.name, "error": str(exc)}
                    )
                    status.state = "stopped"
                    self._on_fatal(exc)
                    return
                _LOGGER.exception("worker.crashed", extra={"worker": worker.name})
            else:
                if self._stopping.is_set():
                    break
                status.last_error = "returned while the daemon was running"
                _LOGGER.error("worker.exited", extra={"worker": worker.name})
            if time.monotonic() - started > self._backoff_max:
                delay = self._backoff_min  # it ran fine for a while: start the backoff afresh
            status.state, status.since = "backoff", time.monotonic()
            status.restarts += 1
            _LOGGER.info(
                "worker.restart_scheduled",
                extra={"worker": worker.name, "delay_s": round(delay, 3)},
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, self._backoff_max)
        status.state, status.since = "stopped", time.monotonic()
        _LOGGER.info("worker.stopped", extra={"worker": worker.name})
