"""Nights: the crash campaign's site closes each terminal's batch during the run, as a site does.

A site closes its terminals' batches daily, at night, when nobody charges; the daemon does it
itself (``[[terminals]] end_of_day``, the runner's daily end of day, skipped and tried again
while a session of the terminal is open or the terminal still holds a pre-authorisation). A run
that never closes a batch piles thousands of payments into one, past what the end of day's
totals can say (BMP 60 counts a card group in one byte), and leaves the captures whose outcome
was lost undecided until the very end. So, once ``every`` EVs have plugged in at a terminal's
EVSEs since its batch closed, it is night there: no EV plugs in at them, and each start of the
daemon (the kills restart it every few seconds) is given that terminal's daily end of day a few
seconds on. The daemon's runner waits for the terminal's sessions to end and closes the batch;
the simulator hands the closed batch over (``SimConfig.on_end_of_day``) before it forgets it, so
that the end checks still see every hold. A night that has not closed its batch after
``NIGHT_MAX_S`` (a hold left open that the sweep has not released yet, say) ends all the same:
the next one closes the bigger batch.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from drivers.sim.pt_state import Transaction

# How far on the end of day is set for a daemon starting now: after its start (READY takes a
# second or two), before the next kill (every few seconds).
LEAD_S = 3.0
# A night that has not closed its batch by then ends anyway (the batch is closed a night later).
NIGHT_MAX_S = 120.0
# How often an EV that waits for the morning looks again.
DAWN_POLL_S = 0.2
# The daemon's retry while a session of the terminal is open (300 s on a site).
RETRY_S = 2


@dataclass
class Nights:
    every: int  # EVs plugged in at a terminal's EVSEs per batch; 0: no nights (one batch)
    plugged: Counter[str] = field(default_factory=Counter)  # since the terminal's batch closed
    dark: dict[str, float] = field(default_factory=dict)  # terminal -> when its night began
    closed: dict[str, list[Transaction]] = field(default_factory=dict)  # every closed batch's
    batches: Counter[str] = field(default_factory=Counter)  # batches closed during the run
    missed: int = 0  # nights that ended without their end of day

    def plugged_in(self, terminal: str) -> None:
        self.plugged[terminal] += 1
        if self.every and self.plugged[terminal] >= self.every and terminal not in self.dark:
            self.dark[terminal] = time.perf_counter()

    async def morning(self, terminal: str, stopping: asyncio.Event) -> None:
        """Wait until it is day at ``terminal`` (or the campaign stops plugging)."""
        while terminal in self.dark and not stopping.is_set():
            if time.perf_counter() - self.dark[terminal] > NIGHT_MAX_S:
                del self.dark[terminal]
                self.missed += 1
                break
            await asyncio.sleep(DAWN_POLL_S)

    def on_end_of_day(self, terminal: str) -> Callable[[list[Transaction]], None]:
        """The simulator's hook: keep the closed batch, and it is day again."""

        def closed(batch: list[Transaction]) -> None:
            self.closed.setdefault(terminal, []).extend(batch)
            self.batches[terminal] += 1
            self.plugged[terminal] = 0
            self.dark.pop(terminal, None)

        return closed

    def config(self, text: str) -> str:
        """The site's config for a daemon starting now: each terminal in the night gets its
        daily end of day ``LEAD_S`` on; the others none. Needs every terminal's block to begin
        ``id = "…"`` (tests.helpers.site_toml)."""
        text = re.sub(r'\nend_of_day = "[0-9:]+"', "", text)
        if not self.every:
            return text
        if "end_of_day_retry_s" not in text:
            text += f"\n[daemon]\nend_of_day_retry_s = {RETRY_S}\n"
        at = (datetime.now(UTC) + timedelta(seconds=LEAD_S)).time().replace(microsecond=0)
        for terminal in self.dark:
            block = f'[[terminals]]\nid = "{terminal}"\n'
            text = text.replace(block, f'{block}end_of_day = "{at.isoformat()}"\n')
        return text
