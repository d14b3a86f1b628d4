"""The engine worker: the asyncio loop around EngineHost.

One queue of engine events in, one at a time: each is handed to the host (which stores the
step before anything happens) and the step's commands are carried out — terminal commands by
that terminal's runner (``terminal_runner.py``), charger commands through the ``ChargerLink``.
Pay requests are admitted or refused by ``admission.py``; charger messages become engine events
in ``charger_adapter.py``. At start every session the last run left open resumes (asked about
anything in flight), so does every settled session whose refund is still ``sent``
(``payments/refund_resume.py``), and each terminal is swept for holds no session owns.

The queue is bounded: input from outside (a charger message, fiscal data, a stored request, a
pay request) is refused with ``QueueFull`` once ``ENGINE_QUEUE_MAX`` events wait. Results of
commands already sent, session timers and resumes are always taken: there is at most one of
each per open session, so they cannot grow the queue without limit either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from drivers.base import Outcome, PaymentTerminal, TerminalResult
from drivers.money import Money
from gateway.errors import InvariantViolated, QueueFull, StoreError
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.charger import ChargerEvent, ChargerLink
from gateway.payments.preauth import Target
from gateway.payments.routing import CardSeen
from gateway.payments.session import Session
from gateway.payments.tariff_text import describe
from gateway.runtime.acquirer_runner import (
    AcquirerRunner,
    driver_ledgers,
    driver_references,
)
from gateway.runtime.admission import Admission, Admitted, EvseRoute, PayAnswer
from gateway.runtime.charger_adapter import ChargerAdapter
from gateway.runtime.engine_host import EngineHost, Handled
from gateway.runtime.engine_parts import (
    ENGINE_QUEUE_MAX,
    QUEUE_CAPACITY,
    LoopState,
    OnlineModifications,
    Queued,
    SiteRules,
    TerminalFacts,
    WorkerStatus,
    refund_request,
)
from gateway.runtime.terminal_calls import answer_event
from gateway.runtime.terminal_runner import TerminalRunner, note_result

__all__ = ["ENGINE_QUEUE_MAX", "EngineWorker", "PayAnswer"]

_LOGGER = logging.getLogger(__name__)
REQUESTS_EVERY_S = 1.0
REQUESTS_PER_POLL = 100  # stored requests read at one poll; the rest at the next
_BACKGROUND = ("sweeper:", "probe:", "cards:", "end-of-day:", "acquirer:")


def _background(task: asyncio.Task[None]) -> bool:
    """The stored-request poller and each terminal's sweep, probe, read-card and end-of-day
    loops: they run for as long as the worker does."""
    name = task.get_name()
    return name == "requests" or name.startswith(_BACKGROUND)


@dataclass(slots=True)
class EngineWorker:
    host: EngineHost
    terminals: Mapping[str, PaymentTerminal]
    charger: ChargerLink
    routes: Mapping[str, EvseRoute]  # evse -> terminal and currency
    facts: TerminalFacts = field(default_factory=TerminalFacts)
    rules: SiteRules = field(default_factory=SiteRules)
    status: WorkerStatus = field(default_factory=WorkerStatus)
    online: OnlineModifications = field(default_factory=OnlineModifications)
    name: str = "engine"
    queue_max: int = ENGINE_QUEUE_MAX
    runners: dict[str, TerminalRunner] = field(init=False)
    acquirers: AcquirerRunner | None = field(init=False, default=None)
    admission: Admission = field(init=False)
    adapter: ChargerAdapter = field(init=False)
    _loop: LoopState = field(init=False, default_factory=LoopState)

    def __post_init__(self) -> None:
        self.admission = Admission(
            host=self.host,
            routes=self.routes,
            board=self.status.terminal_state,
            router=self.rules.router,
            country=self.rules.country,
            health=self.status.health,
            currencies=self.facts.currencies,
        )
        self.adapter = ChargerAdapter(
            submit=self.submit,
            pay=self.request_payment,
            currency=self.admission.currency,
            plug_allowed=lambda evse: self.rules.plug_starts or self.admission.arm_taken(evse),
            meter_keys=self.rules.meter_keys,
            evse_is_sender=self.rules.evse_is_sender,
        )
        self.runners = {
            name: TerminalRunner(
                name=name,
                terminal=terminal,
                host=self.host,
                board=self.status.terminal_state,
                health=self.status.health,
                take=self._take,
                process=self._process,
                dispatch=self._dispatch,
                currency=self.admission.currency_of_terminal(name),
                device=self.facts.devices.get(name, "?"),
                protocol=self.facts.protocols.get(name, "zvt"),
                site=self.rules.site,
                boot=self._loop.boot,
                command_timeout_s=self.facts.command_timeout_s,
                register_timeout_s=self.facts.register_timeout_s,
                probe_every_s=self.facts.probe_every_s,
                end_of_day_retry_s=self.facts.end_of_day_retry_s,
            )
            for name, terminal in self.terminals.items()
        }
        if self.online.routes:
            self.acquirers = AcquirerRunner(
                host=self.host,
                routes=self.online.routes,
                acquirers=self.online.acquirers,
                take=self._take,
                references=driver_references(self.terminals),
                ledgers=driver_ledgers(self.terminals),
            )

    @staticmethod
    def route(terminal: str, currency: str) -> EvseRoute:
        return EvseRoute(terminal, currency)

    # ---- inputs ---------------------------------------------------------------------------

    def submit(self, event: e.Event, stored: Callable[[], None] | None = None) -> None:
        """Queue an event from outside; ``stored`` is called once its step is committed (the
        charger link acknowledges the message only then). QueueFull when ``queue_max`` wait."""
        if self._loop.queue.qsize() >= self.queue_max:
            raise QueueFull("the engine's event queue", self.queue_max)
        self._take(event, stored)

    def _take(self, event: e.Event, stored: Callable[[], None] | None = None) -> None:
        """Queue a result, a timer or a resume: always taken (at most one each per session)."""
        self.status.idle.clear()
        try:
            self._loop.queue.put_nowait((event, stored))
        except asyncio.QueueFull as exc:
            raise InvariantViolated(
                f"the engine's queue holds {QUEUE_CAPACITY} events: more than its sessions can make"
            ) from exc

    def on_charger_event(self, heard: ChargerEvent) -> None:
        self.adapter.heard(heard)

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
        session per EVSE; the same idempotency key gives the same answer. QueueFull (nothing
        stored) while the engine's queue is full: the local API answers 503 with the reason."""
        admitted = self.admission.admit(evse, idempotency_key, target, card, at_terminal)
        if isinstance(admitted, PayAnswer):
            return admitted
        if self._loop.queue.qsize() >= self.queue_max:  # a new session would add to a full queue
            _LOGGER.warning("engine.queue_full", extra={"queue": "engine", "evse": evse})
            raise QueueFull("the engine's event queue", self.queue_max)
        return self._start(admitted)

    def _start(self, admitted: Admitted) -> PayAnswer:
        event = admitted.event
        handled = self._process(event)
        state = handled.session.state.value if handled and handled.session else "?"
        policy = self.host.policy
        tariff = (
            policy.route_tariffs.get(admitted.route) if admitted.route else None
        ) or policy.tariff(event.evse)
        if tariff is not None and handled.session is not None:  # the price, before charging
            hold = Money(handled.session.hold_minor, event.currency)
            lines = [*describe(tariff), f"Hold {hold}"]
            self._spawn(self.charger.display(event.evse, lines), f"{event.session_id}:display")
        return PayAnswer(202, "payment requested", event.session_id, state)

    def _card_read(self, terminal: str, card: CardSeen) -> None:
        try:
            self.admission.card_read(terminal, card, self.request_payment)
        except QueueFull as exc:  # the driver sees no session start and may tap again
            _LOGGER.warning("engine.queue_full", extra={"queue": exc.queue, "terminal": terminal})

    async def end_of_day(self, name: str) -> str:
        """Close the terminal's batch now, unless a transaction of it is open."""
        return await self.runners[name].end_of_day()

    # ---- the loop ---------------------------------------------------------------------------

    async def _begin(self, stopping: asyncio.Event) -> None:
        """Register the terminals, resume the sessions the last run left open, start each
        terminal's timers. Those sessions are listed before the first terminal registers: once
        one is up, a pay request for it starts a session of this run, which is not interrupted
        (resumed, its pre-auth in flight would be taken as lost and its approval released)."""
        interrupted = self.host.open_sessions()
        refunding = self.host.refunds_sent()  # final, but a refund's answer was lost
        # queued now, ahead of a charger message heard while the terminals register: a stop
        # handled first would send a capture of this run that the resume then took as lost
        for session in (*interrupted, *refunding):
            self._take(e.Resumed(session.id, f"resume:{self._loop.boot}"))
        for runner in self.runners.values():  # in turn, each within its deadline
            runner.metrics = self.status.metrics
            await runner.register()
        # READY waits for this: pay requests before it would all be refused
        self.status.registered.set()
        for session in interrupted:
            self._arm(session)
        for name, runner in self.runners.items():  # online: only holds nobody can own
            self._spawn(runner.sweeper(stopping), f"sweeper:{name}")
        if self.acquirers is not None:
            self._spawn(self.acquirers.run(stopping), "acquirer:drain")
        self._spawn(self._requests(stopping), "requests")
        for name, runner in self.runners.items():
            self._spawn(runner.probe(stopping), f"probe:{name}")
        for name, at in self.facts.end_of_day_at.items():
            if name in self.runners:
                self._spawn(self.runners[name].end_of_day_loop(at, stopping), f"end-of-day:{name}")
        if self.rules.card_starts:
            for name, runner in self.runners.items():
                self._spawn(runner.card_loop(stopping, self._card_read), f"cards:{name}")

    async def run(self, stopping: asyncio.Event) -> None:
        # once: a restarted worker must not hear every charger event twice
        if not self._loop.subscribed:
            self.charger.subscribe(self.on_charger_event)
            self._loop.subscribed = True
        await self._begin(stopping)
        getter: asyncio.Task[Queued] | None = None
        stop_wait = asyncio.create_task(stopping.wait())
        failed_wait = asyncio.create_task(self._loop.failed.wait())
        try:
            while not stopping.is_set():
                if self._loop.queue.empty() and not self._tasks_busy():
                    self.status.idle.set()
                getter = asyncio.create_task(self._loop.queue.get())
                await asyncio.wait(
                    {getter, stop_wait, failed_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                if self._loop.failure is not None:
                    # a store error in a command: the supervisor stops the daemon
                    raise self._loop.failure
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
        return any(not _background(t) for t in self._loop.tasks)

    async def _park(self) -> None:
        """On stop: terminal operations in flight finish (their results are stored); the
        rest stays stored and resumes at the next start."""
        for handle in self._loop.timers.values():
            handle.cancel()
        pending = [t for t in self._loop.tasks if not _background(t)]
        for task in self._loop.tasks:
            if _background(task):
                task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        while not self._loop.queue.empty():  # results that arrived while finishing
            self._process_queued(self._loop.queue.get_nowait())

    def _process_queued(self, queued: Queued) -> None:
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
        if self._loop.queue.empty() and not self._tasks_busy():
            self.status.idle.set()
        return handled

    def _arm(self, session: Session) -> None:
        """The session's one timer (its next deadline), replacing the one it had."""
        old = self._loop.timers.pop(session.id, None)
        if old is not None:
            old.cancel()
        if session.timer is None or session.final:
            return
        kind, at = session.timer
        loop = asyncio.get_running_loop()
        delay = max(0.0, (at - self.host.clock()).total_seconds())
        event = e.TimerFired(session.id, f"timer:{kind}:{at.isoformat()}", kind)
        self._loop.timers[session.id] = loop.call_later(delay, self._take, event)

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._loop.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._loop.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            _LOGGER.error("engine.command_failed", exc_info=exc, extra={"task": task.get_name()})
            if isinstance(exc, StoreError):
                self._loop.failure = exc
                self._loop.failed.set()
        if self._loop.queue.empty() and not self._tasks_busy():
            self.status.idle.set()

    # ---- commands -----------------------------------------------------------------------------

    def _dispatch(self, cmd: c.Command) -> None:
        if isinstance(cmd, c.AuthorizeCharger):
            authorize = self.charger.authorize(
                cmd.evse, cmd.session_id, cmd.max_cost_minor, cmd.currency, cmd.start_by, cmd.repeat
            )
            self._spawn(authorize, cmd.key)
        elif isinstance(cmd, c.StopCharger):
            self._spawn(self.charger.stop(cmd.evse, cmd.session_id, cmd.reason), cmd.key)
        elif isinstance(cmd, c.RequestChargerState):
            self._spawn(self.charger.report_state(cmd.evse, cmd.session_id), cmd.key)
        elif isinstance(cmd, c.TERMINAL_COMMANDS):
            if self.acquirers is not None and self.acquirers.takes(cmd):
                self._spawn(self.acquirers.execute(cmd), cmd.key)  # its modification: online
                return
            runner = self.runners.get(cmd.terminal)
            if runner is None:
                self._spawn(self._unknown_terminal(cmd), cmd.key)
            else:
                self._spawn(runner.execute(cmd), cmd.key)
        # c.Enqueue: already in the outbox, written by the step

    async def _unknown_terminal(self, cmd: c.TerminalCommand) -> None:
        """A command for a terminal no longer configured: its session hears an error (nothing
        was sent), so it never waits without an answer."""
        _LOGGER.error(
            "engine.unknown_terminal", extra={"terminal": cmd.terminal, "session": cmd.session_id}
        )
        why = f"terminal {cmd.terminal!r} is not configured"
        result = TerminalResult("-", Outcome.ERROR, why, unreachable=True)
        note_result(self.status.terminal_state, self.status.health, cmd.terminal, result)
        answer = answer_event(cmd, f"{cmd.key}:{uuid.uuid4().hex[:8]}", result, None)
        if answer is not None:
            self._take(answer)

    # ---- stored requests ----------------------------------------------------------------------

    async def _requests(self, stopping: asyncio.Event) -> None:
        """Carry out requests a technician stored (``evpay sessions refund``): the CLI writes
        them to the inbox, so they survive a daemon that is down and are done once. One the
        full queue refuses is handed over again at the next poll."""
        while not stopping.is_set():
            pending = self.host.store.inbox_pending("refund", REQUESTS_PER_POLL)
            # remember only what is still pending: a request carried out is never pending again
            self._loop.requested &= {m["message_id"] for m in pending}
            for m in pending:
                if m["message_id"] in self._loop.requested:
                    continue
                refund = refund_request(m)
                try:
                    self.submit(refund)
                except QueueFull as exc:
                    _LOGGER.warning(
                        "engine.queue_full", extra={"queue": exc.queue, "reason": "refund"}
                    )
                    break
                self._loop.requested.add(m["message_id"])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REQUESTS_EVERY_S):
                    await stopping.wait()
