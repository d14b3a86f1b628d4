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

from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.session import FINAL, Policy, Session, State, from_json, to_json, transition
from gateway.store import JournalEntry, OutboxMessage, PaymentRecord, SessionRecord, Step, Store, TerminalRecord

_LOGGER = logging.getLogger(__name__)


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

    def load(self, session_id: str) -> Session | None:
        row = self.store.session(session_id)
        return from_json(row["data"]) if row else None

    def open_sessions(self) -> list[Session]:
        return [from_json(r["data"]) for r in self.store.sessions(open_only=True, limit=100_000)]

    def sweep(self, terminal: str, open_receipts: tuple[int, ...], currency: str, sweep_id: str) -> list[c.Command]:
        """Terminal-level reconciliation: release every open hold no open session owns.

        Skipped while a pre-authorisation on this terminal is in flight or unresolved: its
        fresh hold would look like an orphan before its result is stored."""
        # A final session's old receipt number may be reused for a new hold: only open sessions own one.
        here = [s for s in self.open_sessions() if s.terminal == terminal]
        if any(s.state in (State.AUTHORIZING, State.AUTH_UNKNOWN) for s in here):
            return []
        owned = {s.receipt_no for s in here if s.receipt_no is not None}
        commands: list[c.Command] = []
        for receipt in sorted(set(open_receipts) - owned):
            sid = f"orphan-{terminal}-{receipt}-{sweep_id}"
            commands += self.handle(e.OrphanFound(sid, "found", terminal, receipt, currency)).commands
        return commands

    def record_terminal(self, name: str, device: str, approved: bool, terminal_id: str | None, site: str) -> None:
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
                OutboxMessage(f"terminal:{ocpi_id}:{terminal_id}", f"terminal:{ocpi_id}", "terminal.post",
                              {"terminal_id": ocpi_id, "reference": terminal_id or name})
            ]  # fmt: skip
        journal = [JournalEntry("terminal", name, f"terminal.{state}", data)]
        record = TerminalRecord(name, device, "zvt", state, data)
        self.store.apply(Step(key, terminals=[record], journal=journal, outbox=outbox))

    def _with_orphans(self, event: e.OpenPreauthsReported, session: Session) -> e.OpenPreauthsReported:
        """Orphans are computed here, one event at a time, so two sessions never adopt the same
        hold; and not at all while another pre-auth on the terminal is in flight (its fresh hold
        is not owned yet): the enquiry is then repeated later."""
        others = [s for s in self.open_sessions() if s.terminal == session.terminal and s.id != session.id]
        if session.state is State.AUTH_UNKNOWN and any(s.state is State.AUTHORIZING for s in others):
            return replace(event, orphans=(), failed=True)
        owned = {s.receipt_no for s in others if s.receipt_no is not None}
        return replace(event, orphans=tuple(r for r in event.receipts if r not in owned))

    def handle(self, event: e.Event) -> Handled:
        now = self.clock()
        before = self.load(event.session_id)
        if isinstance(event, e.OpenPreauthsReported) and before is not None:
            event = self._with_orphans(event, before)
        result = transition(before, event, now, self.policy)
        after = result.session
        if after is None or (after == before and not result.commands):
            if result.note:
                _LOGGER.debug("engine.ignored", extra={"session": event.session_id, "note": result.note})
            return Handled(after, (), False)
        step = self._step(event, before, after, result.commands, result.note)
        if not self.store.apply(step):
            return Handled(self.load(event.session_id), (), False)  # a duplicate: already done
        if before is None or before.state != after.state:
            _LOGGER.info(
                "session.state",
                extra={"session": after.id, "from": before.state.value if before else "-", "to": after.state.value,
                       "event": type(event).__name__},
            )  # fmt: skip
        return Handled(after, tuple(x for x in result.commands if not isinstance(x, c.Enqueue)), True)

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
                "session", after.id, type(event).__name__,
                {"event_id": event.event_id, "from": before.state.value if before else None, "to": after.state.value,
                 "note": note, "commands": [type(x).__name__ for x in commands]},
            )
        ]  # fmt: skip
        outbox = [
            OutboxMessage(x.message_id, x.object_key, x.kind, x.payload) for x in commands if isinstance(x, c.Enqueue)
        ]
        return Step(
            key=f"{after.id}:{event.event_id}",
            sessions=[SessionRecord(after.id, after.state.value, to_json(after), final=after.state in FINAL)],
            payments=_payments(after),
            journal=journal,
            outbox=outbox,
        )


def _payments(s: Session) -> list[PaymentRecord]:
    """The money view of a session, one row per kind, for reconciliation queries."""
    rows = []
    if s.authorized_minor or s.state not in (
        State.AUTHORIZING,
        State.AUTH_UNKNOWN,
        State.DECLINED,
        State.FAILED,
    ):
        rows.append(PaymentRecord(f"{s.id}:preauth", s.id, "preauth", "approved" if s.authorized_minor else "none",
                                  s.authorized_minor, s.currency, {"receipt_no": s.receipt_no}))  # fmt: skip
    if s.captured_minor:
        rows.append(PaymentRecord(f"{s.id}:capture", s.id, "capture", "done", s.captured_minor, s.currency))
    if s.released_minor:
        rows.append(PaymentRecord(f"{s.id}:release", s.id, "release", "done", s.released_minor, s.currency))
    return rows
