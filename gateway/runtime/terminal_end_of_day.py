"""A terminal's end of day: the daily loop and the batch closed now (moved from
``terminal_runner``, whose methods of the same names call these).

Why apart: closing the batch decides *when* the terminal may close it (never while one of its
transactions is open, the check made again once the line is ours) and records what the batch
counted beside the journal's captures; the runner only owns the line and the timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractAsyncContextManager
from datetime import datetime, time, timedelta
from typing import Protocol

from drivers.base import PaymentTerminal
from gateway.runtime.engine_host import EngineHost

_LOGGER = logging.getLogger(__name__)


class TerminalLine(Protocol):
    """What of the terminal's runner an end of day uses: its line (``claim``) and its names."""

    name: str
    terminal: PaymentTerminal
    host: EngineHost
    currency: str
    end_of_day_retry_s: float

    def claim(self) -> AbstractAsyncContextManager[None]: ...


async def end_of_day_loop(self: TerminalLine, at: time, stopping: asyncio.Event) -> None:
    """The terminal's end of day at ``at`` (site time) every day; while a transaction of the
    terminal is open it is skipped and tried again ``end_of_day_retry_s`` later."""
    tz = self.host.policy.tz
    due = next_local(datetime.now(tz), at)
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, (due - datetime.now(tz)).total_seconds())):
                await stopping.wait()
        if stopping.is_set():
            return
        outcome = await close_batch(self)
        _LOGGER.info("engine.end_of_day", extra={"terminal": self.name, "outcome": outcome})
        if outcome == "done":
            due = next_local(datetime.now(tz) + timedelta(minutes=1), at)
        else:
            due = datetime.now(tz) + timedelta(seconds=self.end_of_day_retry_s)


async def close_batch(self: TerminalLine) -> str:
    """Close the terminal's batch now, unless a transaction of it is open: "done", or why
    not. Asked again once the line is ours: a capture retried while the end of day waited
    for the line was sent before the batch closed and is carried out after it. The batch
    ends when the end of day began (a capture sent during it is in the next one)."""
    busy = self.host.open_on_terminal(self.name)
    if not busy:
        async with self.claim():
            busy = self.host.open_on_terminal(self.name)  # again, the line ours now
            if not busy:
                began = self.host.clock()
                result = await self.terminal.end_of_day()
    if busy:
        self.host.note_end_of_day_skipped(self.name, busy)
        return f"skipped: session {busy} is open"
    if not result.approved:
        return f"refused: {result.message}"
    self.host.record_end_of_day(self.name, result, self.currency, at=began)
    return "done"


def next_local(now: datetime, at: time) -> datetime:
    """The next moment at local wall time ``at`` after ``now`` (aware, in the site's zone)."""
    candidate = now.replace(hour=at.hour, minute=at.minute, second=at.second, microsecond=0)
    if candidate > now:
        return candidate
    # the wall time again tomorrow (a DST change moves the instant, not the time)
    tomorrow = candidate + timedelta(days=1)
    return tomorrow.replace(hour=at.hour, minute=at.minute, second=at.second)
