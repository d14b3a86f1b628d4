"""One runner per payment terminal: the only code that talks to its driver.

It owns what is the terminal's alone: the one-exchange-at-a-time claim (a read-card waiting for
a driver is aborted so that a money command never waits behind it), the commands waiting for
it (at most ``COMMANDS_WAITING_MAX``), its registration, its availability, and its timers: the
sweep for holds no session owns, the probe of a terminal that is out, its daily end of day and
its read-card loop. Results go back to the engine loop as events; the runner decides nothing
about money.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as monotonic_time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, time

from drivers.base import Outcome, PaymentTerminal, TerminalResult
from drivers.errors import DriverError
from gateway.errors import StoreError
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.moves import UNKNOWN_STATES
from gateway.payments.routing import CardSeen, Health
from gateway.payments.states import IN_FLIGHT
from gateway.runtime.engine_host import EngineHost, Handled
from gateway.runtime.metrics import Metrics
from gateway.runtime.online_orphans import online_orphans
from gateway.runtime.terminal_calls import answer_event, call, last_result, result_event
from gateway.runtime.terminal_end_of_day import close_batch, end_of_day_loop

_LOGGER = logging.getLogger(__name__)

# Commands for one terminal at once (waiting for it or at it). A site has a few EVSEs per
# terminal and each session has one command out at a time, so this is far above need; beyond
# it a command is not sent and its session hears BUSY (the terminal was not asked: nothing
# happened), which it answers as it answers a busy terminal.
COMMANDS_WAITING_MAX = 32
SWEEP_EVERY_S = 600.0
# A sweep put off because a hold was being made on the terminal is tried again this soon: a
# hold whose top-up or pre-auth result was lost is released within a minute, not ten.
SWEEP_RETRY_S = 30.0
# A terminal whose line was lost is asked this often whether it is back: pay requests for it are
# refused meanwhile, and nothing else would ask it if the lost command was its session's last.
UNAVAILABLE_PROBE_S = 5.0
CARD_WAIT_S = 30  # one read-card exchange; the loop starts the next at once
CARD_LOOP_PAUSE_S = 0.2  # between two read-card exchanges, so a money command gets the line

# The sessions whose fate after a restart hangs on the terminal's last result: the snapshot
# asked at registration answers their first enquiry.
_ASKED_AFTER_START = frozenset(IN_FLIGHT | set(UNKNOWN_STATES))
# The commands that make a transaction (and so a new last result) at the terminal.
_MONEY = (c.Preauthorize, c.TopUp, c.Capture, c.Release, c.RefundPayment)

Board = dict[str, tuple[bool, str]]  # terminal -> (available, why): pay requests and /health


def note_result(board: Board, health: Health, name: str, result: TerminalResult) -> None:
    """Whether the terminal is there, from what it last did (for pay requests and /health): a
    refusal (a declined card, a top-up it cannot do) leaves it available."""
    lost = result.unreachable or (result.operation == "register" and not result.approved)
    board[name] = (not lost, result.message if lost else "ok")
    if lost or result.outcome in (Outcome.ERROR, Outcome.BUSY):  # technical: counts to failover
        health.failed(name)
        if not health.up(name):
            _LOGGER.warning(
                "engine.terminal_out", extra={"terminal": name, "reason": result.message}
            )
    elif result.approved or result.outcome is Outcome.DECLINED:  # it answered as it should
        if not health.up(name):
            _LOGGER.info("engine.terminal_back", extra={"terminal": name})
        health.succeeded(name)


@dataclass(slots=True, kw_only=True)
class TerminalRunner:
    name: str
    terminal: PaymentTerminal
    host: EngineHost
    board: Board  # shared with the worker and admission (one entry per terminal)
    health: Health  # shared: routing's failover reads it
    take: Callable[[e.Event], None]  # a result back to the engine loop (always taken)
    process: Callable[[e.Event], Handled]  # one step now: a result stored before it is confirmed
    dispatch: Callable[[c.Command], None]  # the sweep's release commands
    currency: str
    device: str = "?"
    protocol: str = "zvt"  # what the store records the terminal as
    site: str = "site"
    boot: str = ""  # this start's id: the sweep's orphan sessions are named with it
    command_timeout_s: float = 330.0  # above ZVT T4 (180 s) with card waits; below the engine's
    register_timeout_s: float = 30.0
    probe_every_s: float = 60.0
    end_of_day_retry_s: float = 300.0  # a transaction open at that time: try again this much later
    metrics: Metrics | None = None  # command latencies go here
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _reading: bool = False
    _commands: int = 0  # waiting for the terminal or at it
    # After a start the terminal's last result (ZVT 06 20) is asked once, before any new
    # session may start on it (a new transaction would overwrite it): the sessions open at that
    # moment, and the settled ones whose refund is still sent, are answered with this snapshot
    # (what it says, and when it was asked).
    _asked: asyncio.Event = field(default_factory=asyncio.Event)
    _snapshot: tuple[e.LastResult | None, datetime] | None = None
    _resuming: set[str] = field(default_factory=set)

    @property
    def available(self) -> bool:
        return self.board.get(self.name, (False, ""))[0]

    def note(self, result: TerminalResult) -> None:
        note_result(self.board, self.health, self.name, result)

    # ---- registration -----------------------------------------------------------------------

    async def register(self) -> None:
        """Register within a deadline: a terminal that never answers is marked unavailable (pay
        requests for it are refused) instead of blocking the engine."""
        try:
            async with asyncio.timeout(self.register_timeout_s):
                result = await self.terminal.connect()
        except TimeoutError:
            result = TerminalResult(
                "register",
                Outcome.ERROR,
                f"no answer within {self.register_timeout_s:.0f} s",
                unreachable=True,
            )
        except (OSError, DriverError) as exc:
            result = TerminalResult("register", Outcome.ERROR, str(exc), unreachable=True)
        self.note(result)
        if not result.approved:
            _LOGGER.warning(
                "terminal.unreachable", extra={"terminal": self.name, "error": result.message}
            )
        self.host.record_terminal(
            self.name,
            self.device,
            result.approved,
            result.terminal_id,
            self.site,
            protocol=self.protocol,
        )
        if result.approved:
            await self.ask_last_result()

    async def ask_last_result(self) -> None:
        """Once after a start, before any new session starts here: ask the terminal to repeat
        its last result. A capture or pre-auth whose answer the restart lost is judged on this
        snapshot, not on whatever a newer session did on the terminal since (issue 26)."""
        if self._asked.is_set():
            return
        self._resuming = {
            s.id
            for s in self.host.open_sessions()
            if s.terminal == self.name and s.state in _ASKED_AFTER_START
        } | {s.id for s in self.host.refunds_sent() if s.terminal == self.name}
        async with self.claim():
            last = await last_result(self.terminal)
        self._snapshot = (last, self.host.clock())
        _LOGGER.info(
            "terminal.last_result",
            extra={"terminal": self.name, "approved": last.approved if last else None},
        )
        self._asked.set()

    async def _may_start(self) -> bool:
        """A money command waits (up to the registration deadline) for that snapshot."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.register_timeout_s):
                await self._asked.wait()
        return self._asked.is_set()

    # ---- commands -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def claim(self) -> AsyncIterator[None]:
        """One exchange at a time on the terminal: a read-card waiting for a driver is aborted
        (06 B0) so that a money command never waits behind it."""
        if self._reading:
            with contextlib.suppress(DriverError, OSError):
                await self.terminal.abort()
        async with self._lock:
            yield

    async def execute(self, cmd: c.TerminalCommand) -> None:
        """Carry out one terminal command. Whatever happens — a full queue, a driver exception,
        no answer — the session hears back, so it never waits without an answer."""
        attempt = uuid.uuid4().hex[:8]
        event_id = f"{cmd.key}:{attempt}"
        if self._commands >= COMMANDS_WAITING_MAX:
            why = f"{COMMANDS_WAITING_MAX} commands already wait for terminal {self.name}"
            _LOGGER.warning(
                "engine.queue_full",
                extra={"queue": f"terminal:{self.name}", "session": cmd.session_id, "reason": why},
            )
            refused = TerminalResult("-", Outcome.BUSY, f"not sent: {why}")
            answer = answer_event(cmd, event_id, refused, None)
            if answer is not None:
                self.take(answer)
            return
        if isinstance(cmd, _MONEY) and not await self._may_start():
            # any money command makes a new last result: one sent before the snapshot (the
            # terminal back after a start it missed) would overwrite the evidence a session
            # open at the restart is judged on
            why = "the terminal's last result is not yet asked after the start"
            refused = TerminalResult("-", Outcome.BUSY, f"not sent: {why}")
            answer = answer_event(cmd, event_id, refused, None)
            if answer is not None:
                self.take(answer)
            return
        self._commands += 1
        try:
            await self._execute(cmd, attempt)
        finally:
            self._commands -= 1

    async def _execute(self, cmd: c.TerminalCommand, attempt: str) -> None:
        stored: list[TerminalResult] = []
        if not isinstance(cmd, c.QueryOpenPreauths):  # acting again: the snapshot is stale
            self._resuming.discard(cmd.session_id)

        async def persist(result: TerminalResult) -> None:
            # Stored before the terminal hears we have it (ZVT: before 80 00 to the 04 0F); the
            # session decides what a result the terminal may still reverse can settle.
            held = result_event(cmd, f"{cmd.key}:{attempt}:held", result)
            self.process(replace(held, provisional=True))
            stored.append(result)

        try:
            async with asyncio.timeout(self.command_timeout_s), self.claim():  # with a deadline
                began = monotonic_time.monotonic()
                result = await call(self.terminal, cmd, persist)
                if self.metrics is not None:
                    self.metrics.observe(
                        "evpay_terminal_command_seconds",
                        monotonic_time.monotonic() - began,
                        operation=type(cmd).__name__.lower(),
                    )
        except StoreError:
            raise
        except TimeoutError:
            result = TerminalResult(
                "-",
                Outcome.UNKNOWN,
                f"no answer within {self.command_timeout_s:.0f} s",
                unreachable=True,
            )
        except Exception as exc:  # a driver bug must not strand a session: its command's fate
            _LOGGER.exception(  # is unknown
                "engine.terminal_error", extra={"terminal": self.name, "session": cmd.session_id}
            )
            result = TerminalResult(
                "-", Outcome.UNKNOWN, f"driver error: {type(exc).__name__}: {exc}", unreachable=True
            )
        self.note(result)
        if result.outcome is Outcome.UNKNOWN and stored and stored[-1].approved:
            result = await self._stood(cmd, stored[-1], result)
        last, asked_at = None, None
        if isinstance(cmd, c.QueryOpenPreauths) and result.approved:
            if cmd.session_id in self._resuming and self._snapshot is not None:
                self._resuming.discard(cmd.session_id)  # open at the start: the snapshot
                last, asked_at = self._snapshot
            else:
                async with self.claim():
                    last = await last_result(self.terminal)
        answer = answer_event(cmd, f"{cmd.key}:{attempt}", result, last, asked_at)
        if answer is not None:
            self.take(answer)

    async def _stood(
        self, cmd: c.TerminalCommand, approval: TerminalResult, lost: TerminalResult
    ) -> TerminalResult:
        """An approval stored, then the answer lost (the line dropped before our
        acknowledgement): ask the terminal to repeat its last result. The same receipt,
        approved, is the terminal's word that the transaction stood; anything else (or no
        answer) leaves the outcome unknown for the session's own enquiry."""
        try:
            async with asyncio.timeout(self.register_timeout_s), self.claim():
                last = await last_result(self.terminal)
        except (TimeoutError, DriverError, OSError):
            last = None
        if last is None or not last.approved or last.ref != approval.ref:
            return lost
        _LOGGER.info(
            "engine.result_confirmed",
            extra={"terminal": self.name, "session": cmd.session_id, "receipt": last.ref},
        )
        return approval

    # ---- timers -------------------------------------------------------------------------------

    async def sweeper(self, stopping: asyncio.Event) -> None:
        """Release holds no open session owns, at start and then every SWEEP_EVERY_S (or
        SWEEP_RETRY_S while a hold was being made on the terminal and it could not be swept)."""
        while not stopping.is_set():
            put_off = self.host.making_holds(self.name)
            if not put_off:
                async with self.claim():
                    result = await self.terminal.open_preauthorizations()
                refs = result.open_refs
                if result.approved and self.name in self.host.policy.online_deadlines:
                    refs = online_orphans(self.host, self.name, refs, self.terminal)
                if result.approved:
                    for cmd in self.host.sweep(self.name, refs, self.currency, self.boot):
                        self.dispatch(cmd)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_RETRY_S if put_off else SWEEP_EVERY_S):
                    await stopping.wait()

    async def probe(self, stopping: asyncio.Event) -> None:
        """Ask the terminal whether it is back: every UNAVAILABLE_PROBE_S while it is marked
        unavailable (its line lost, its registration refused), every ``probe_every_s`` while it
        is out of the routing after repeated technical failures."""
        loop = asyncio.get_running_loop()
        routing_due = loop.time() + self.probe_every_s
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(UNAVAILABLE_PROBE_S, self.probe_every_s)):
                    await stopping.wait()
            # available without its last result asked: back through another command's
            # reconnect (an enquiry), which no money command may follow until it is asked
            due = self.name in self.board and not (self.available and self._asked.is_set())
            if loop.time() >= routing_due:
                due = due or not self.health.up(self.name)
                routing_due = loop.time() + self.probe_every_s
            if not due or self._reading:
                continue
            try:
                async with self.claim():
                    result = await self.terminal.status()
            except (DriverError, OSError) as exc:
                result = TerminalResult("status", Outcome.ERROR, str(exc), unreachable=True)
            self.note(result)
            if result.approved:  # back: its last result first, if the start could not ask it
                await self.ask_last_result()

    async def end_of_day_loop(self, at: time, stopping: asyncio.Event) -> None:
        await end_of_day_loop(self, at, stopping)  # terminal_end_of_day.py

    async def end_of_day(self) -> str:
        return await close_batch(self)

    async def card_loop(
        self, stopping: asyncio.Event, card_read: Callable[[str, CardSeen], None]
    ) -> None:
        """Card first: wait for a driver to tap a card (ZVT 06 C0), then hand the card on
        (``card_read``: admission decides where the session starts)."""
        while not stopping.is_set():
            await asyncio.sleep(CARD_LOOP_PAUSE_S)
            if self._lock.locked() or not self.available or not self._asked.is_set():
                continue
            async with self._lock:
                self._reading = True
                try:
                    result = await self.terminal.read_card(CARD_WAIT_S)
                except (DriverError, OSError) as exc:
                    _LOGGER.warning(
                        "engine.read_card_failed", extra={"terminal": self.name, "error": str(exc)}
                    )
                    continue
                finally:
                    self._reading = False
            if result.approved and result.card is not None and result.card.is_payment_card:
                card_read(
                    self.name, CardSeen.from_masked(result.card.brand, result.card.masked_pan)
                )
