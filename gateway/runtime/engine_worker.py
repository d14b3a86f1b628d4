"""The engine worker: the asyncio edge around EngineHost.

It turns charger events, terminal results and timers into engine events, hands each to the
host (which stores the step before anything happens) and then carries out the commands:
terminal operations through the ``PaymentTerminal`` drivers, charger operations through the
``ChargerLink``. At start it resumes every open session (asking terminals about anything in
flight) and sweeps each terminal for holds no session owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time as monotonic_time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta

from drivers.base import Outcome, PaymentTerminal, TerminalResult
from drivers.errors import DriverError
from drivers.money import Money
from gateway.errors import StoreError
from gateway.fiscal.meter import SignedMeter
from gateway.fiscal.meter import check as check_meter
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.charger import ChargerEvent, ChargerLink
from gateway.payments.events import Operation
from gateway.payments.preauth import Target
from gateway.payments.routing import CardSeen, Health, Route, choose
from gateway.payments.session import Session
from gateway.payments.states import EVSE_FREE
from gateway.payments.tariff import describe
from gateway.runtime.engine_host import EngineHost, Handled
from gateway.runtime.metrics import Metrics

_LOGGER = logging.getLogger(__name__)
SWEEP_EVERY_S = 600.0
# A sweep put off because a hold was being made on the terminal is tried again this soon: a
# hold whose top-up or pre-auth result was lost is released within a minute, not ten.
SWEEP_RETRY_S = 30.0
# A terminal whose line was lost is asked this often whether it is back: pay requests for it are
# refused meanwhile, and nothing else would ask it if the lost command was its session's last.
UNAVAILABLE_PROBE_S = 5.0
REQUESTS_EVERY_S = 1.0
CARD_WAIT_S = 30  # one read-card exchange; the loop starts the next at once
CARD_ARMED_S = 60.0


def _background(task: asyncio.Task[None]) -> bool:
    """The sweeper, the stored-request poller and the read-card and end-of-day loops: they run
    for as long as the worker does."""
    name = task.get_name()
    return name in ("sweeper", "requests", "probe") or name.startswith(("cards:", "end-of-day:"))


@dataclass(frozen=True, slots=True)
class PayAnswer:
    """What a pay request gets: 202 with the stored session, or the refusal and why."""

    status: int
    message: str
    session_id: str | None = None
    state: str | None = None


@dataclass(slots=True)
class _Route:
    terminal: str
    currency: str


@dataclass(slots=True)
class EngineWorker:
    host: EngineHost
    terminals: Mapping[str, PaymentTerminal]
    charger: ChargerLink
    routes: Mapping[str, _Route]  # evse -> terminal and currency
    devices: Mapping[str, str] = field(
        default_factory=dict
    )  # terminal -> device URL, for the records
    site: str = "site"
    plug_starts: bool = True  # the charger may ask for payment ([charger] start_paths "plug")
    card_starts: bool = (
        False  # a card tapped at the terminal starts a session ([charger] start_paths "card")
    )
    meter_keys: Mapping[str, str] = field(
        default_factory=dict
    )  # evse -> its meter's public key (OCMF)
    end_of_day_at: Mapping[str, time] = field(
        default_factory=dict
    )  # terminal -> its daily end of day, site time
    end_of_day_retry_s: float = 300.0  # a transaction open at that time: try again this much later
    _requested: set[str] = field(
        default_factory=set
    )  # stored requests (inbox) already handed to the engine
    router: tuple[Route, ...] = ()  # configured routes; none: each EVSE's own terminal (``routes``)
    country: str = ""
    health: Health = field(default_factory=Health)  # technical failures per terminal, for failover
    probe_every_s: float = 60.0
    metrics: Metrics | None = None  # terminal command latencies go here
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _reading: set[str] = field(default_factory=set)
    _armed: dict[str, float] = field(
        default_factory=dict
    )  # terminal -> until when a tapped card waits for an EVSE
    name: str = "engine"
    _queue: asyncio.Queue[tuple[e.Event, Callable[[], None] | None]] = field(
        default_factory=asyncio.Queue
    )
    _timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _boot: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    _subscribed: bool = False
    _failure: BaseException | None = None
    _failed: asyncio.Event = field(default_factory=asyncio.Event)
    terminal_state: dict[str, tuple[bool, str]] = field(
        default_factory=dict
    )  # name -> (available, why)
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    register_timeout_s: float = 30.0
    command_timeout_s: float = (
        330.0  # above ZVT T4 (180 s) with card waits; below the engine's answer deadline
    )

    @staticmethod
    def route(terminal: str, currency: str) -> _Route:
        return _Route(terminal, currency)

    # ---- inputs ---------------------------------------------------------------------------

    def submit(self, event: e.Event, stored: Callable[[], None] | None = None) -> None:
        """Queue an event; ``stored`` is called once its step is committed (the charger link
        acknowledges the message only then)."""
        self.idle.clear()
        self._queue.put_nowait((event, stored))

    def request_payment(
        self,
        evse: str,
        idempotency_key: str | None = None,
        target: Target | None = None,
        card: CardSeen | None = None,
        at_terminal: str | None = None,
    ) -> PayAnswer:
        """Start a paid session at an EVSE, or refuse at once with the reason. The session is a
        stored step before this returns: nothing money-bearing waits in memory. One open
        session per EVSE; the same idempotency key gives the same answer. With routes, the
        route picks the terminal (``card``: read before the pre-auth, at ``at_terminal``)."""
        route = self.routes.get(evse)
        if route is None:
            return PayAnswer(404, f"unknown EVSE {evse!r}")
        sid = uuid.uuid4().hex
        if idempotency_key:
            sid = hashlib.sha256(f"{evse}\x00{idempotency_key}".encode()).hexdigest()[:32]
            known = self.host.load(sid)
            if known is not None:
                return PayAnswer(202, "payment requested", sid, known.state.value)
        busy = next(
            (s for s in self.host.open_sessions() if s.evse == evse and s.state not in EVSE_FREE),
            None,
        )
        if busy is not None:
            return PayAnswer(
                409, f"EVSE {evse} already has an open session", busy.id, busy.state.value
            )
        chosen: str | None = None
        if self.router:
            choice = choose(self.router, evse, self.country, self.health, card, at_terminal)
            if isinstance(choice, str):
                return PayAnswer(503, f"no acquirer can take this payment: {choice}")
            route, chosen = self.route(choice.terminal, choice.currency), choice.route
        up, why = self.terminal_state.get(route.terminal, (False, "not registered yet"))
        if not up:
            return PayAnswer(503, f"terminal {route.terminal} unavailable: {why}")
        handled = self._process(
            e.CardPresented(sid, "card", evse, route.terminal, route.currency, target, chosen)
        )
        state = handled.session.state.value if handled and handled.session else "?"
        tariff = (
            self.host.policy.route_tariffs.get(chosen) if chosen else None
        ) or self.host.policy.tariff(evse)
        if tariff is not None and handled.session is not None:  # the price, before charging starts
            hold = Money(handled.session.hold_minor, route.currency)
            self._spawn(
                self.charger.display(evse, [*describe(tariff), f"Hold {hold}"]), f"{sid}:display"
            )
        return PayAnswer(202, "payment requested", sid, state)

    def on_charger_event(self, ev: ChargerEvent) -> None:
        if ev.kind == "payment_requested":
            self._payment_requested(ev)  # stored (or refused) before this returns
            if ev.done is not None:
                ev.done()
        elif ev.kind == "started":
            self.submit(e.ChargerStarted(ev.session_id, "started", ev.meter_wh or 0), ev.done)
        elif ev.kind == "meter":
            self.submit(
                e.MeterValue(
                    ev.session_id, f"meter:{ev.seq}", ev.meter_wh or 0, ev.trusted, self._signed(ev)
                ),
                ev.done,
            )
        elif ev.kind == "stopped":
            self.submit(
                e.ChargerStopped(
                    session_id=ev.session_id,
                    event_id="stopped",
                    meter_wh=ev.meter_wh,
                    session_energy_wh=ev.session_energy_wh,
                    reason=ev.reason,
                    invoicer=ev.invoicer,
                    invoice_reference=ev.invoice_reference,
                    signed=self._signed(ev),
                ),
                ev.done,
            )
        elif ev.kind == "faulted":
            self.submit(e.ChargerFaulted(ev.session_id, "faulted", ev.reason or "fault"), ev.done)
        elif ev.kind == "price_corrected" and ev.total_minor is not None:
            event = e.PriceCorrected(
                session_id=ev.session_id,
                event_id=f"price-{ev.reason.replace(' ', '-')}",
                total_minor=ev.total_minor,
                reason=ev.reason,
            )
            self.submit(event, ev.done)
        elif ev.done is not None:
            ev.done()

    def _payment_requested(self, ev: ChargerEvent) -> None:
        if not self.plug_starts and not self._arm_taken(ev.evse):
            _LOGGER.warning(
                "engine.payment_refused", extra={"evse": ev.evse, "reason": "plug starts disabled"}
            )
            return
        target = None
        route = self.routes.get(ev.evse)
        if ev.target_kwh is not None:
            target = Target(kwh=ev.target_kwh)
        elif ev.target_amount is not None and route is not None:
            target = Target(amount_minor=Money.parse(str(ev.target_amount), route.currency).minor)
        answer = self.request_payment(
            ev.evse, ev.session_id or None, target
        )  # the charger's message id
        if answer.status != 202:
            _LOGGER.warning(
                "engine.payment_refused", extra={"evse": ev.evse, "reason": answer.message}
            )

    def _signed(self, ev: ChargerEvent) -> SignedMeter | None:
        """The meter's OCMF record checked against the EVSE's configured key (CPU only, here at
        the edge so the engine gets a verdict, not a record to parse)."""
        return None if ev.signed is None else check_meter(ev.signed, self.meter_keys.get(ev.evse))

    # ---- the loop ---------------------------------------------------------------------------

    async def _register_terminals(self) -> None:
        """Register every terminal, each within a deadline: a terminal that never answers is
        marked unavailable (pay requests for it are refused) instead of blocking the engine."""
        for name, terminal in self.terminals.items():
            try:
                async with asyncio.timeout(self.register_timeout_s):
                    result = await terminal.connect()
            except TimeoutError:
                result = TerminalResult(
                    "register",
                    Outcome.ERROR,
                    f"no answer within {self.register_timeout_s:.0f} s",
                    unreachable=True,
                )
            except (OSError, DriverError) as exc:
                result = TerminalResult("register", Outcome.ERROR, str(exc), unreachable=True)
            self._note_terminal(name, result)
            if not result.approved:
                _LOGGER.warning(
                    "terminal.unreachable", extra={"terminal": name, "error": result.message}
                )
            self.host.record_terminal(
                name, self.devices.get(name, "?"), result.approved, result.terminal_id, self.site
            )

    def _note_terminal(self, name: str, result: TerminalResult) -> None:
        """Whether the terminal is there, from what it last did (for pay requests and /health): a
        refusal (a declined card, a top-up it cannot do) leaves it available."""
        lost = result.unreachable or (result.operation == "register" and not result.approved)
        self.terminal_state[name] = (not lost, result.message if lost else "ok")
        if lost or result.outcome in (
            Outcome.ERROR,
            Outcome.BUSY,
        ):  # technical: counts towards failover
            self.health.failed(name)
            if not self.health.up(name):
                _LOGGER.warning(
                    "engine.terminal_out", extra={"terminal": name, "reason": result.message}
                )
        elif result.approved or result.outcome is Outcome.DECLINED:  # it answered as it should
            if not self.health.up(name):
                _LOGGER.info("engine.terminal_back", extra={"terminal": name})
            self.health.succeeded(name)

    async def run(self, stopping: asyncio.Event) -> None:
        if not self._subscribed:  # once: a restarted worker must not hear every charger event twice
            self.charger.subscribe(self.on_charger_event)
            self._subscribed = True
        await self._register_terminals()
        self.registered.set()  # READY waits for this: pay requests before it would all be refused
        for session in self.host.open_sessions():
            self.submit(e.Resumed(session.id, f"resume:{self._boot}"))
            self._arm(session)
        self._spawn(self._sweeper(stopping), "sweeper")
        self._spawn(self._requests(stopping), "requests")
        self._spawn(self._probe(stopping), "probe")
        for name, at in self.end_of_day_at.items():
            self._spawn(self._end_of_day_loop(name, at, stopping), f"end-of-day:{name}")
        if self.card_starts:
            for name in self.terminals:
                self._spawn(self._card_loop(name, stopping), f"cards:{name}")
        getter: asyncio.Task[tuple[e.Event, Callable[[], None] | None]] | None = None
        stop_wait = asyncio.create_task(stopping.wait())
        failed_wait = asyncio.create_task(self._failed.wait())
        try:
            while not stopping.is_set():
                if self._queue.empty() and not self._tasks_busy():
                    self.idle.set()
                getter = asyncio.create_task(self._queue.get())
                await asyncio.wait(
                    {getter, stop_wait, failed_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                if self._failure is not None:
                    # a store error in a command: the supervisor stops the daemon
                    raise self._failure
                if getter.done():
                    queued, getter = getter.result(), None
                    self._process_queued(queued)
        finally:
            stop_wait.cancel()
            failed_wait.cancel()
            if getter is not None:
                getter.cancel()
            await self._park()

    def _tasks_busy(self) -> bool:
        return any(not _background(t) for t in self._tasks)

    async def _park(self) -> None:
        """On stop: terminal operations in flight finish (their results are stored); the
        rest stays stored and resumes at the next start."""
        for handle in self._timers.values():
            handle.cancel()
        pending = [t for t in self._tasks if not _background(t)]
        for task in self._tasks:
            if _background(task):
                task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        while not self._queue.empty():  # results that arrived while finishing
            self._process_queued(self._queue.get_nowait())

    def _process_queued(self, queued: tuple[e.Event, Callable[[], None] | None]) -> None:
        event, stored = queued
        self._process(event)
        if stored is not None:  # committed: the charger's message may be acknowledged now
            stored()

    def _process(self, event: e.Event) -> Handled:
        handled = self.host.handle(event)
        if handled.session is not None:
            self._arm(handled.session)
        for command in handled.commands:
            self._dispatch(command)
        if self._queue.empty() and not self._tasks_busy():
            self.idle.set()
        return handled

    def _arm(self, session: Session) -> None:
        old = self._timers.pop(session.id, None)
        if old is not None:
            old.cancel()
        if session.timer is None or session.final:
            return
        kind, at = session.timer
        loop = asyncio.get_running_loop()
        delay = max(0.0, (at - self.host.clock()).total_seconds())
        event = e.TimerFired(session.id, f"timer:{kind}:{at.isoformat()}", kind)
        self._timers[session.id] = loop.call_later(delay, self.submit, event)

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            _LOGGER.error("engine.command_failed", exc_info=exc, extra={"task": task.get_name()})
            if isinstance(exc, StoreError):
                self._failure = exc
                self._failed.set()
        if self._queue.empty() and not self._tasks_busy():
            self.idle.set()

    # ---- commands -----------------------------------------------------------------------------

    def _dispatch(self, cmd: c.Command) -> None:
        if isinstance(cmd, c.AuthorizeCharger):
            authorize = self.charger.authorize(
                cmd.evse, cmd.session_id, cmd.max_cost_minor, cmd.currency, cmd.start_by, cmd.repeat
            )
            self._spawn(authorize, cmd.key)
        elif isinstance(cmd, c.StopCharger):
            self._spawn(self.charger.stop(cmd.evse, cmd.session_id, cmd.reason), cmd.key)
        elif isinstance(cmd, c.TERMINAL_COMMANDS):
            self._spawn(self._terminal(cmd), cmd.key)
        # c.Enqueue: already in the outbox, written by the step

    async def _terminal(self, cmd: c.TerminalCommand) -> None:
        """Carry out one terminal command. Whatever happens — an unknown terminal, a driver
        exception — the session hears back, so it never waits without an answer."""
        attempt = uuid.uuid4().hex[:8]
        terminal = self.terminals.get(cmd.terminal)
        try:
            if terminal is None:
                _LOGGER.error(
                    "engine.unknown_terminal",
                    extra={"terminal": cmd.terminal, "session": cmd.session_id},
                )
                result = TerminalResult(
                    "-",
                    Outcome.ERROR,
                    f"terminal {cmd.terminal!r} is not configured",
                    unreachable=True,
                )
            else:
                async with (
                    asyncio.timeout(self.command_timeout_s),
                    self._claim(cmd.terminal),
                ):  # with a deadline
                    began = monotonic_time.monotonic()
                    result = await self._run(terminal, cmd, attempt)
                    if self.metrics is not None:
                        operation = type(cmd).__name__.lower()
                        self.metrics.observe(
                            "evpay_terminal_command_seconds",
                            monotonic_time.monotonic() - began,
                            operation=operation,
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
        except (
            Exception
        ) as exc:  # a driver bug must not strand a session: its money command's fate is unknown
            _LOGGER.exception(
                "engine.terminal_error", extra={"terminal": cmd.terminal, "session": cmd.session_id}
            )
            result = TerminalResult(
                "-", Outcome.UNKNOWN, f"driver error: {type(exc).__name__}: {exc}", unreachable=True
            )
        self._note_terminal(cmd.terminal, result)
        if isinstance(cmd, c.QueryOpenPreauths):
            last = None
            if result.approved and terminal is not None:
                async with self._claim(cmd.terminal):
                    last = await self._last_result(terminal)
            self.submit(
                e.OpenPreauthsReported(
                    cmd.session_id,
                    f"{cmd.key}:{attempt}",
                    result.open_receipts,
                    failed=not result.approved,
                    last=last,
                    busy=result.outcome is Outcome.BUSY,
                )
            )
        elif not isinstance(cmd, c.ShowReceipt):
            self.submit(self._event(cmd, f"{cmd.key}:{attempt}", result))

    async def _run(
        self, terminal: PaymentTerminal, cmd: c.TerminalCommand, attempt: str
    ) -> TerminalResult:
        async def persist(result: TerminalResult) -> None:
            # Stored before the terminal hears we have it (ZVT: before 80 00 to the 04 0F); the
            # session decides what a result the terminal may still reverse can settle.
            self._process(
                replace(self._event(cmd, f"{cmd.key}:{attempt}:held", result), provisional=True)
            )

        match cmd:
            case c.QueryOpenPreauths():
                return await terminal.open_preauthorizations()
            case c.ShowReceipt(display=True):
                return await terminal.display(cmd.lines, 60)
            case c.ShowReceipt():
                return await terminal.print_text(cmd.lines)
            case c.Preauthorize():
                return await terminal.preauthorize(
                    Money(cmd.amount_minor, cmd.currency), cmd.reference, persist
                )
            case c.TopUp():
                return await terminal.add_hold(
                    cmd.receipt_no,
                    cmd.trace_no,
                    Money(cmd.amount_minor, cmd.currency),
                    cmd.reference,
                    persist,
                )
            case c.Capture():
                return await terminal.capture(
                    cmd.receipt_no,
                    Money(cmd.held_minor, cmd.currency),
                    Money(cmd.amount_minor, cmd.currency),
                    cmd.reference,
                    persist,
                    cmd.exact,
                )
            case c.Release():
                return await terminal.release(
                    cmd.receipt_no, Money(cmd.held_minor, cmd.currency), persist
                )
            case c.RefundPayment(method="reversal", receipt_no=int(receipt)):
                return await terminal.reverse(receipt, persist)
            case c.RefundPayment():
                return await terminal.refund(Money(cmd.amount_minor, cmd.currency), persist)
        raise AssertionError(f"not a terminal command: {cmd}")

    async def _last_result(self, terminal: PaymentTerminal) -> e.LastResult | None:
        """The terminal's repeat of its last result (evidence for a lost capture or pre-auth)."""
        try:
            last = await terminal.last_result()
        except StoreError:
            raise
        except Exception:  # evidence is optional: without it nothing is booked
            _LOGGER.exception("engine.last_result_failed", extra={"terminal": terminal.name})
            return None
        if last.outcome is Outcome.UNKNOWN or last.result_code is None:
            return None
        amount = last.amount.minor if last.amount else None
        return e.LastResult(approved=last.approved, receipt_no=last.receipt_no, amount_minor=amount)

    @staticmethod
    def _event(
        cmd: c.TerminalCommand, event_id: str, result: TerminalResult
    ) -> e.TerminalResultArrived:
        if isinstance(cmd, c.RefundPayment):
            op = Operation.REVERSAL if cmd.method == "reversal" else Operation.REFUND
        else:
            op = {
                c.Preauthorize: Operation.PREAUTHORIZE,
                c.TopUp: Operation.TOPUP,
                c.Capture: Operation.CAPTURE,
                c.Release: Operation.RELEASE,
            }[type(cmd)]
        card = {}
        if result.card is not None:
            card = {
                k: v
                for k, v in (
                    ("masked_pan", result.card.masked_pan),
                    ("brand", result.card.brand),
                    ("aid", result.card.aid),
                )
                if v
            }
        for_receipt = cmd.receipt_no if isinstance(cmd, c.Capture | c.Release | c.TopUp) else None
        return e.TerminalResultArrived(
            session_id=cmd.session_id,
            event_id=event_id,
            operation=op,
            outcome=result.outcome,
            amount_minor=result.amount.minor if result.amount else None,
            receipt_no=result.receipt_no,
            message=result.message,
            card=card,
            for_receipt=for_receipt,
            trace_no=result.trace_no,
        )

    # ---- card-first starts: the terminal's read-card loop (ZVT 06 C0) ------------------------

    @contextlib.asynccontextmanager
    async def _claim(self, name: str) -> AsyncIterator[None]:
        """One exchange at a time on a terminal: a read-card waiting for a driver is aborted
        (06 B0) so that a money command never waits behind it."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        terminal = self.terminals.get(name)
        if name in self._reading and terminal is not None:
            with contextlib.suppress(DriverError, OSError):
                await terminal.abort()
        async with lock:
            yield

    async def _card_loop(self, name: str, stopping: asyncio.Event) -> None:
        """Card first: a driver taps a card, then the session starts at the terminal's EVSE — at
        once when it has one free, else at the EVSE where a plug-in (or the driver's choice on
        the charger's screen) follows within CARD_ARMED_S."""
        terminal = self.terminals[name]
        lock = self._locks.setdefault(name, asyncio.Lock())
        while not stopping.is_set():
            await asyncio.sleep(0.2)
            if lock.locked() or not self.terminal_state.get(name, (False, ""))[0]:
                continue
            async with lock:
                self._reading.add(name)
                try:
                    result = await terminal.read_card(CARD_WAIT_S)
                except (DriverError, OSError) as exc:
                    _LOGGER.warning(
                        "engine.read_card_failed", extra={"terminal": name, "error": str(exc)}
                    )
                    continue
                finally:
                    self._reading.discard(name)
            if result.approved and result.card is not None and result.card.is_payment_card:
                self._card_read(
                    name, CardSeen.from_masked(result.card.brand, result.card.masked_pan)
                )

    def _card_read(self, name: str, card: CardSeen | None = None) -> None:
        evses = [evse for evse, route in self.routes.items() if route.terminal == name]
        busy = {s.evse for s in self.host.open_sessions() if s.state not in EVSE_FREE}
        free = [evse for evse in evses if evse not in busy]
        if len(free) == 1:
            answer = self.request_payment(
                free[0],
                f"card:{uuid.uuid4().hex}",
                card=card,
                at_terminal=name if self.router else None,
            )
            _LOGGER.info(
                "engine.card_start",
                extra={"terminal": name, "evse": free[0], "status": answer.status},
            )
        elif free:
            self._armed[name] = asyncio.get_running_loop().time() + CARD_ARMED_S
            _LOGGER.info("engine.card_armed", extra={"terminal": name, "evses": ",".join(free)})

    def _arm_taken(self, evse: str) -> bool:
        """A plug-in (or an EVSE chosen on the charger) after a card tap at its terminal."""
        route = self.routes.get(evse)
        until = self._armed.pop(route.terminal, 0.0) if route else 0.0
        return until > asyncio.get_running_loop().time()

    async def _requests(self, stopping: asyncio.Event) -> None:
        """Carry out requests a technician stored (``evpay sessions refund``): the CLI writes
        them to the inbox, so they survive a daemon that is down and are done once."""
        while not stopping.is_set():
            for m in self.host.store.inbox_pending("refund"):
                if m["message_id"] in self._requested:
                    continue
                self._requested.add(m["message_id"])
                p = m["payload"]
                self.submit(
                    e.RefundRequested(
                        session_id=p["session_id"],
                        event_id=f"refund-{m['message_id']}",
                        amount_minor=int(p["amount_minor"]),
                        reason=str(p["reason"]),
                        source=str(p.get("source", "technician")),
                        inbox_id=m["message_id"],
                    )
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REQUESTS_EVERY_S):
                    await stopping.wait()

    async def _probe(self, stopping: asyncio.Event) -> None:
        """Ask terminals that are out whether they are back: one marked unavailable (its line
        lost, its registration refused) every UNAVAILABLE_PROBE_S, one out of the routing after
        repeated technical failures every ``probe_every_s``."""
        loop = asyncio.get_running_loop()
        routing_due = loop.time() + self.probe_every_s
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(UNAVAILABLE_PROBE_S, self.probe_every_s)):
                    await stopping.wait()
            due = [name for name, (up, _) in self.terminal_state.items() if not up]
            if loop.time() >= routing_due:
                due += self.health.down()
                routing_due = loop.time() + self.probe_every_s
            for name in dict.fromkeys(due):
                terminal = self.terminals.get(name)
                if terminal is None or name in self._reading:
                    continue
                try:
                    async with self._claim(name):
                        result = await terminal.status()
                except (DriverError, OSError) as exc:
                    result = TerminalResult("status", Outcome.ERROR, str(exc), unreachable=True)
                self._note_terminal(name, result)

    async def _end_of_day_loop(self, name: str, at: time, stopping: asyncio.Event) -> None:
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
            outcome = await self.end_of_day(name)
            _LOGGER.info("engine.end_of_day", extra={"terminal": name, "outcome": outcome})
            if outcome == "done":
                due = next_local(datetime.now(tz) + timedelta(minutes=1), at)
            else:
                due = datetime.now(tz) + timedelta(seconds=self.end_of_day_retry_s)

    async def end_of_day(self, name: str) -> str:
        """Close the terminal's batch now, unless a transaction of it is open: "done", or why
        not."""
        busy = self.host.open_on_terminal(name)
        if busy:
            self.host.note_end_of_day_skipped(name, busy)
            return f"skipped: session {busy} is open"
        terminal = self.terminals[name]
        async with self._claim(name):
            result = await terminal.end_of_day()
        if not result.approved:
            return f"refused: {result.message}"
        currency = next((r.currency for r in self.routes.values() if r.terminal == name), "EUR")
        self.host.record_end_of_day(name, result, currency)
        return "done"

    async def _sweeper(self, stopping: asyncio.Event) -> None:
        """Release holds no open session owns, at start and then every SWEEP_EVERY_S (or
        SWEEP_RETRY_S while a terminal was making a hold and could not be swept)."""
        while not stopping.is_set():
            put_off = False
            for name, terminal in self.terminals.items():
                if self.host.making_holds(name):
                    put_off = True
                    continue
                currency = next(
                    (r.currency for r in self.routes.values() if r.terminal == name), "EUR"
                )
                async with self._claim(name):
                    result = await terminal.open_preauthorizations()
                if result.approved:
                    for cmd in self.host.sweep(name, result.open_receipts, currency, self._boot):
                        self._dispatch(cmd)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_RETRY_S if put_off else SWEEP_EVERY_S):
                    await stopping.wait()


def next_local(now: datetime, at: time) -> datetime:
    """The next moment at local wall time ``at`` after ``now`` (aware, in the site's zone)."""
    candidate = now.replace(hour=at.hour, minute=at.minute, second=at.second, microsecond=0)
    if candidate > now:
        return candidate
    tomorrow = candidate + timedelta(
        days=1
    )  # the wall time again (a DST change moves the instant, not the time)
    return tomorrow.replace(hour=at.hour, minute=at.minute, second=at.second)
