"""The engine host: one event in → the pure transition → one durable store step → commands out.

Synchronous on purpose: the asyncio worker and the deterministic simulation test drive the
very same code. Each step is keyed ``<session>:<event_id>``, so a redelivered event is
skipped by the store and produces no command: nothing is charged twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from drivers.base import TerminalResult
from gateway.errors import StaleRead
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.record import from_json, to_row
from gateway.payments.session import FINAL, Policy, Session, State, transition
from gateway.payments.states import EVSE_FREE
from gateway.runtime.end_of_day_evidence import decide_unconfirmed
from gateway.runtime.last_result_owner import IN_FLIGHT_HOLDS, MAKING_HOLDS, ambiguous
from gateway.runtime.payment_rows import payment_rows
from gateway.store import (
    EndOfDayRecord,
    JournalEntry,
    OutboxMessage,
    SessionRecord,
    Step,
    Store,
    TerminalRecord,
)

_LOGGER = logging.getLogger(__name__)
# Refunds still ``sent`` asked about at one start (each one enquiry, one terminal exchange).
REFUNDS_RESUMED_MAX = 1000


@dataclass(frozen=True, slots=True)
class Handled:
    session: Session | None
    commands: tuple[c.Command, ...]
    applied: bool


class EngineHost:
    def __init__(self, store: Store, policy: Policy, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        # Open sessions as this host last stored them: a step need not read back and parse what
        # the step before it wrote. Trusted only while the store has seen no other writer (its
        # generation); a step computed from a stale copy is refused by the store (StaleRead) and
        # computed again from the database.
        self._open: dict[str, Session] = {}
        self._generation = store.generation

    def load(self, session_id: str) -> Session | None:
        if self._generation != self.store.generation:
            self._open.clear()
            self._generation = self.store.generation
        cached = self._open.get(session_id)
        if cached is not None:
            return cached
        row = self.store.session(session_id)
        return from_json(row["data"]) if row else None

    def open_sessions(self) -> list[Session]:
        return [from_json(r["data"]) for r in self.store.sessions(open_only=True, limit=100_000)]

    def refunds_sent(self) -> list[Session]:
        """Final sessions whose refund is still ``sent``: asked about after a start. Past
        ``REFUNDS_RESUMED_MAX`` the newest wait for the next start (logged); reconciliation
        lists every one meanwhile (``refund_unsettled``)."""
        rows = self.store.sessions_refund_sent(REFUNDS_RESUMED_MAX + 1)
        if len(rows) > REFUNDS_RESUMED_MAX:
            _LOGGER.error("engine.refunds_sent_bound", extra={"limit": REFUNDS_RESUMED_MAX})
        return [from_json(r["data"]) for r in rows[:REFUNDS_RESUMED_MAX]]

    def _owned_refs(self, open_here: list[Session], terminal: str) -> set[str]:
        """References of holds some session answers for: every hold of the terminal's open sessions
        (``open_here``, already loaded by the caller), and the still-valid holds of a final
        session that owes money (its capture may yet be proven; the sweep must never release the
        hold that secures a debt)."""
        owing = self.store.owing_hold_refs(terminal, self.clock())
        if len(owing) >= self.store.owing_refs_limit:  # the oldest debts' holds may be missing
            _LOGGER.error("engine.owing_refs_bound", extra={"terminal": terminal})
        return {h.ref for s in open_here for h in s.holds} | set(owing)

    def sweep(
        self, terminal: str, open_refs: tuple[str, ...], currency: str, sweep_id: str
    ) -> list[c.Command]:
        """Terminal-level reconciliation: release every open hold no session answers for.

        Skipped while a pre-authorisation or top-up on this terminal is in flight or
        unresolved: its fresh hold would look like an orphan before its result is stored; and
        for a terminal that cannot release an uncompleted hold (``release_open``): there a hold
        nobody owns can only lapse, and an orphan session made each sweep for it would release
        nothing. A terminal whose modifications go to an acquirer releases at the acquirer; its
        open list is not the truth (the POI does not see the captures made online): the caller
        passes only the holds ``online_orphans`` found that no one can own."""
        if self.making_holds(terminal):
            return []
        online = terminal in self.policy.online_deadlines
        if not online and not self.policy.capabilities_of(terminal).release_open:
            return []
        here = [s for s in self.open_sessions() if s.terminal == terminal]
        owned = self._owned_refs(here, terminal)
        commands: list[c.Command] = []
        # in the terminal's own order (a reference is opaque: never sorted as a number)
        for ref in (r for r in dict.fromkeys(open_refs) if r not in owned):
            sid = f"orphan-{terminal}-{ref}-{sweep_id}"
            commands += self.handle(
                e.OrphanFound(
                    session_id=sid,
                    event_id="found",
                    terminal=terminal,
                    ref=ref,
                    currency=currency,
                )
            ).commands
        return commands

    def making_holds(self, terminal: str) -> bool:
        return any(s.terminal == terminal and s.state in MAKING_HOLDS for s in self.open_sessions())

    def record_terminal(
        self,
        name: str,
        device: str,
        approved: bool,
        terminal_id: str | None,
        site: str,
        *,
        protocol: str = "zvt",
    ) -> None:
        """Store a terminal's registration; the first time a terminal id is seen, announce it
        to the CPO (OCPI POST Terminal) through the outbox."""
        state = "registered" if approved else "unreachable"
        data = {"terminal_id": terminal_id} if terminal_id else {}
        key = f"terminal:{name}:{state}:{self.clock().isoformat(timespec='seconds')}"
        outbox = []
        if approved:
            key = f"terminal:{name}:registered:{terminal_id}"
            ocpi_id = f"{site}-{name}"[:36]
            outbox = [
                OutboxMessage(
                    f"terminal:{ocpi_id}:{terminal_id}",
                    f"terminal:{ocpi_id}",
                    "terminal.post",
                    {"terminal_id": ocpi_id, "reference": terminal_id or name},
                )
            ]
        journal = [JournalEntry("terminal", name, f"terminal.{state}", data)]
        record = TerminalRecord(name, device, protocol, state, data)
        self.store.apply(Step(key, terminals=[record], journal=journal, outbox=outbox))

    def open_on_terminal(self, terminal: str) -> str | None:
        """A session of this terminal with a transaction still open (its batch must not close).
        One waiting for its next capture or release try holds nothing at the terminal until
        then: a capture retried for weeks must not keep every other payment out of the batch
        (each captured hold is counted in the batch it was booked in)."""
        busy = (
            s
            for s in self.open_sessions()
            if s.terminal == terminal and s.state not in EVSE_FREE and s.state not in _WAITING
        )
        return next((s.id for s in busy), None)

    def note_end_of_day_skipped(self, terminal: str, session_id: str) -> None:
        at = self.clock()
        entry = JournalEntry(
            "terminal", terminal, "end_of_day.skipped", {"open_session": session_id}
        )
        self.store.apply(Step(f"eod:{terminal}:skipped:{at.isoformat()}", journal=[entry]))

    def record_end_of_day(
        self, terminal: str, result: TerminalResult, currency: str, at: datetime | None = None
    ) -> None:
        """The closed batch's totals, stored beside the journal's captures of the same period
        (up to ``at``, when the end of day began; now if not given); then what they prove about
        the batch's unconfirmed captures (end_of_day_evidence.py)."""
        at = at or self.clock()
        start = self.store.last_end_of_day(terminal)
        totals = [
            {
                "brand": t.brand,
                "currency": t.currency,
                "count": t.count,
                "amount_minor": t.amount_minor,
            }
            for t in result.totals
        ]
        total = result.amount.minor if result.amount else None
        batch = EndOfDayRecord(terminal, at, currency, total, result.batch_range, totals)
        # (entries before 0013 say "receipts": [first, last] as numbers; they stay as written)
        data = {"total_minor": total, "batch_range": result.batch_range, "totals": totals}
        entry = JournalEntry("terminal", terminal, "end_of_day", data)
        self.store.apply(
            Step(f"eod:{terminal}:{at.isoformat()}", journal=[entry], end_of_day=[batch])
        )
        decide_unconfirmed(
            self.store,
            self.handle,
            terminal=terminal,
            currency=currency,
            start=start,
            at=at,
            result=result,
        )

    def _with_orphans(
        self, event: e.OpenPreauthsReported, session: Session
    ) -> e.OpenPreauthsReported:
        """Orphans are computed here, one event at a time, so two sessions never adopt the same
        hold; and not at all while another pre-auth on the terminal is in flight (its fresh hold
        is not owned yet): the enquiry is then repeated later."""
        others = [
            s for s in self.open_sessions() if s.terminal == session.terminal and s.id != session.id
        ]
        if session.state is State.AUTH_UNKNOWN and any(s.state in IN_FLIGHT_HOLDS for s in others):
            return replace(event, orphans=(), failed=True, busy=True)
        if session.terminal in self.policy.online_deadlines:  # captured online: not orphans
            return replace(event, orphans=())
        owned = self._owned_refs(others, session.terminal)
        event = replace(event, orphans=tuple(r for r in event.refs if r not in owned))
        if event.last is not None and ambiguous(
            self.store, self.clock(), session, event.last, event.last_asked_at
        ):
            event = replace(
                event, last=None
            )  # it may be another session's transaction: no evidence for us
        return event

    def _day_closed(self, s: Session) -> bool:
        """Has an end of day on the session's terminal closed the batch its capture is in?"""
        closed = self.store.last_end_of_day(s.terminal)
        return closed is not None and closed >= (s.bill.captured_at or s.created_at)

    def handle(self, event: e.Event) -> Handled:
        for _ in range(3):
            try:
                return self._handle(event)
            except StaleRead:
                self._open.clear()  # another process wrote the database: read it again
        return self._handle(event)

    def _handle(self, event: e.Event) -> Handled:
        now = self.clock()
        read_at = self.store.generation
        before = self.load(event.session_id)
        if _from_another_evse(event, before):
            # a charger naming a session of another EVSE (issue 27): refused, never applied
            _LOGGER.warning(
                "engine.wrong_evse",
                extra={
                    "session": event.session_id,
                    "event": event.event_id,
                    "evse": getattr(event, "evse", None),
                },
            )
            return Handled(before, (), False)
        if isinstance(event, e.OpenPreauthsReported) and before is not None:
            event = self._with_orphans(event, before)
        if isinstance(event, e.RefundRequested | e.PriceCorrected) and before is not None:
            event = replace(
                event,
                day_closed=self._day_closed(before),
                acquirer=before.terminal in self.policy.online_deadlines,
                card_present=before.terminal not in self.policy.no_card_present_refunds,
            )
        result = transition(before, event, now, self.policy)
        after = result.session
        if after is None or (after == before and not result.commands):
            energy = isinstance(event, e.MeterValue | e.ChargerStopped)
            if energy and (before is None or before.state in FINAL):
                # energy no open session takes (a forged or late message): said, never silent
                why = "no such session" if before is None else f"session is {before.state.value}"
                _LOGGER.warning(
                    "engine.energy_ignored",
                    extra={"session": event.session_id, "event": event.event_id, "why": why},
                )
            elif result.note:
                _LOGGER.debug(
                    "engine.ignored", extra={"session": event.session_id, "note": result.note}
                )
            return Handled(after, (), False)
        step = self._step(event, before, after, result.commands, result.note)
        if not self.store.apply(step, read_at=read_at):
            self._open.pop(event.session_id, None)
            return Handled(self.load(event.session_id), (), False)  # a duplicate: already done
        if after.state in FINAL:
            self._open.pop(after.id, None)
        elif len(self._open) < _OPEN_CACHE_LIMIT or after.id in self._open:
            self._open[after.id] = after
        if before is None or before.state != after.state:
            _LOGGER.info(
                "session.state",
                extra={
                    "session": after.id,
                    "from": before.state.value if before else "-",
                    "to": after.state.value,
                    "event": type(event).__name__,
                },
            )
        commands: list[c.Command] = [x for x in result.commands if not isinstance(x, c.Enqueue)]
        if (
            isinstance(event, e.OpenPreauthsReported)
            and event.orphans
            and after.final
            and not after.holds
        ):
            # Our lost pre-auth may be among them, but nothing proves which: release every hold no
            # session owns now (each an orphan session of its own), not at the next periodic sweep.
            commands += self.sweep(
                after.terminal, event.orphans, after.currency, f"lost-{after.id[:12]}"
            )
        return Handled(after, tuple(commands), True)

    def _step(
        self,
        event: e.Event,
        before: Session | None,
        after: Session,
        commands: tuple[c.Command, ...],
        note: str,
    ) -> Step:
        journal = [
            JournalEntry(
                "session",
                after.id,
                type(event).__name__,
                {
                    "event_id": event.event_id,
                    "from": before.state.value if before else None,
                    "to": after.state.value,
                    "note": note,
                    "commands": [type(x).__name__ for x in commands],
                },
            )
        ]
        outbox = [
            OutboxMessage(x.message_id, x.object_key, x.kind, x.payload)
            for x in commands
            if isinstance(x, c.Enqueue)
        ]
        data, readings = to_row(after)
        return Step(
            key=f"{after.id}:{event.event_id}",
            sessions=[
                SessionRecord(
                    after.id,
                    after.state.value,
                    data,
                    final=after.state in FINAL,
                    owed_minor=after.bill.owed_minor,
                    terminal=after.terminal,
                    readings=readings,
                )
            ],
            payments=payment_rows(after),
            journal=journal,
            outbox=outbox,
            inbox_processed=[event.inbox_id]
            if isinstance(event, e.RefundRequested) and event.inbox_id
            else [],
        )


_OPEN_CACHE_LIMIT = (
    10_000  # far more than a site's chargers; beyond it, sessions are read from the store
)
_WAITING = (State.CAPTURE_RETRY, State.RELEASE_RETRY)  # nothing at the terminal until the retry


def _from_another_evse(event: e.Event, session: Session | None) -> bool:
    """Does a charger event come from an EVSE that is not its session's?"""
    if not isinstance(event, e.ChargerStarted | e.MeterValue | e.ChargerStopped | e.ChargerFaulted):
        return False
    return session is not None and event.evse is not None and event.evse != session.evse
