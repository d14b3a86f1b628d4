"""The acquirer runner: the modifications of a terminal whose ``modifications`` name an acquirer
go here, never to the terminal, and the acquirer's webhooks come back to the engine as the very
events a terminal's results would be.

Why it is shaped so:

- Store and forward. A command becomes a ``Modification`` in the acquirer's book (``queued``)
  before anything is sent; the drain loop (``forwarding.py``) sends it under the engine's stable
  command key, which the profile turns into the acquirer's idempotency key. A restart, an uplink
  that is down or an answer lost is still one modification at the acquirer. The engine never
  repeats a command after a restart: it asks (``QueryOpenPreauths``) and this runner answers
  from the book.
- "Received" is not an outcome. The session waits in its capturing, releasing or topping-up
  state for the webhook, up to the acquirer's ``webhook_deadline_s`` (``Policy.online_deadlines``
  sets that state's deadline). A stored webhook settles the modification in the book; its
  outcome becomes one engine event whose id is the modification's key and status, so handing
  it over again (a duplicate webhook, a restart) is a step the store skips.
- A release of a hold whose pspReference never reached us (a lost pre-auth the terminal could
  not tell us about, ``lost_settlement.cancel_by_reference``) is a cancel by our merchant
  reference, the one the terminal was given; its TECHNICAL_CANCEL or CANCELLATION settles it.
- A missing webhook is never a success: a capture past its deadline becomes unconfirmed (owed,
  listed by reconciliation as ``missing_webhook``); a release past it stays unknown and is asked
  about again until the hold lapses; a refund past it is ``unknown``. A webhook that comes
  later still decides an unconfirmed capture (``CaptureEvidence``): it is the evidence.
- A capture or cancel the acquirer confirmed closes the hold in the terminal's driver ledger
  (``HoldLedger``, nexo), which never hears of it otherwise: its open list and the online
  orphan sweep would grow with every payment. Told on every hand-over (a restart offers the
  settled ones again), before the session hears: the driver stores it, and skips a known one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp

from drivers.base import HoldLedger, Outcome
from drivers.money import Money
from gateway.acquirer.forwarding import Forwarder
from gateway.acquirer.port import Modification
from gateway.acquirer.profiles import profile
from gateway.errors import ModificationRefused, StoreError
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.events import Operation
from gateway.payments.model import Session, by_reference, sale_reference
from gateway.payments.refunds import RefundMethod
from gateway.payments.states import State
from gateway.runtime.acquirer_outcomes import hold_of, outcome_events, split_key
from gateway.runtime.engine_host import EngineHost
from gateway.settings import AcquirerSettings
from gateway.store.acquirer import AcquirerBook, StoredModification

_LOGGER = logging.getLogger(__name__)

DRAIN_EVERY_S = 5.0  # the queue is tried again this often (an uplink that is down)
SETTLED_LOOKBACK = timedelta(days=7)  # outcomes offered to the engine again after a start
DELIVERED_MAX = 10_000  # outcomes remembered as handed over; beyond it, offered again (no-ops)
CANCEL_ATTEMPTS_MAX = 10  # a refused cancel is sent again under a new key at most this often
_SETTLED = frozenset({"confirmed", "failed", "rejected"})

Take = Callable[[e.Event], None]
# (terminal, the hold's text ref) -> the acquirer's reference of that payment, or None
References = Callable[[str, str], str | None]
# (terminal, the hold's text ref, captured: else cancelled) -> the driver's ledger is told
Ledgers = Callable[[str, str, bool], None]
_CLOSING = {"capture": True, "cancel": False, "cancel_by_reference": False}


def _no_ledgers(_terminal: str, _ref: str, _captured: bool) -> None:
    """No terminal keeps a ledger of its own: nothing to tell."""


def driver_references(terminals: Mapping[str, object]) -> References:
    """The acquirer's reference of a hold, as the terminal's driver reads it from the hold's
    opaque ref (nexo: the POI transaction, whose TransactionID carries Adyen's pspReference).
    A driver that cannot tell (``payment_reference`` absent) gives none: nothing is sent."""

    def reference(terminal: str, ref: str) -> str | None:
        lookup = getattr(terminals.get(terminal), "payment_reference", None)
        found = lookup(ref) if lookup is not None else None
        return str(found) if found else None

    return reference


def driver_ledgers(terminals: Mapping[str, object]) -> Ledgers:
    """Tell a terminal's driver that keeps its own hold ledger (``HoldLedger``) that a hold was
    closed at the acquirer. A driver that cannot store it (a full disk) is logged: the hold
    stays open in its ledger and is told again on the next start (the settled lookback)."""

    def close(terminal: str, ref: str, captured: bool) -> None:
        driver = terminals.get(terminal)
        if not isinstance(driver, HoldLedger):
            return
        try:
            driver.note_closed(ref, captured=captured)
        except OSError:
            _LOGGER.exception("acquirer.ledger_not_stored", extra={"terminal": terminal})

    return close


@dataclass(slots=True, kw_only=True)
class AcquirerRunner:
    host: EngineHost
    routes: Mapping[str, str]  # terminal -> the [acquirers.NAME] its modifications go to
    acquirers: Mapping[str, AcquirerSettings]
    take: Take  # an event back to the engine loop (always taken)
    references: References
    ledgers: Ledgers = _no_ledgers
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _delivered: dict[str, str] = field(default_factory=dict)  # command key -> status handed over
    _since: datetime | None = None

    @property
    def book(self) -> AcquirerBook:
        return self.host.store.acquirer

    def takes(self, cmd: c.TerminalCommand) -> bool:
        """Does this command go to the acquirer? Its terminal's capability decides, and for an
        enquiry the session's state: only a capture's or release's fate is the acquirer's."""
        if cmd.terminal not in self.routes:
            return False
        if isinstance(cmd, c.TopUp | c.Capture | c.Release):
            return True
        if isinstance(cmd, c.RefundPayment):
            return cmd.method == RefundMethod.ACQUIRER.value
        if isinstance(cmd, c.QueryOpenPreauths):
            s = self.host.load(cmd.session_id)
            return s is not None and s.state in (State.CAPTURE_UNKNOWN, State.RELEASE_UNKNOWN)
        return False

    def wake(self, _new: int = 0) -> None:
        """New webhooks stored (the receiver's hook) or a modification queued: act now."""
        self._wake.set()

    # ---- commands -----------------------------------------------------------------------------

    async def execute(self, cmd: c.TerminalCommand) -> None:
        """Record the modification (before anything is sent) and wake the drain; an enquiry is
        answered from the book. The session hears back only on an outcome."""
        if isinstance(cmd, c.QueryOpenPreauths):
            self._enquiry(cmd)
            return
        try:
            modification = self._modification(cmd)
        except ModificationRefused as exc:  # nothing sent: the session hears why
            _LOGGER.error(  # noqa: TRY400 - a refusal, not a fault
                "acquirer.not_sent", extra={"session": cmd.session_id, "reason": str(exc)}
            )
            self._answer(cmd, Outcome.DECLINED, f"not sent to the acquirer: {exc}")
            return
        key = modification.command_key
        stored = self.book.get(key)
        if stored is None:
            self.book.enqueue(self.routes[cmd.terminal], modification, self.host.clock())
            _LOGGER.info(
                "acquirer.queued",
                extra={"session": cmd.session_id, "kind": modification.kind, "key": key},
            )
        elif stored.status in _SETTLED:
            self._delivered.pop(key, None)  # asked again: its outcome is handed over again
        self._wake.set()

    def _modification(self, cmd: c.TerminalCommand) -> Modification:
        held: str | None = getattr(cmd, "ref", None)
        named = held is not None and by_reference(held) is None
        ref = self.references(cmd.terminal, held) if held is not None and named else None
        if isinstance(cmd, c.Capture):
            return Modification(
                cmd.key,
                "capture",
                payment_reference=ref,
                amount=Money(cmd.amount_minor, cmd.currency),
                authorised=Money(cmd.held_minor, cmd.currency),
            )
        if isinstance(cmd, c.TopUp):  # Adyen sets the new total, not an increment
            s = self.host.load(cmd.session_id)
            hold = hold_of(s, cmd.ref) if s is not None else None
            if hold is None:
                raise ModificationRefused(f"hold {cmd.ref} is not the session's")
            total = Money(hold.amount_minor + cmd.amount_minor, cmd.currency)
            return Modification(cmd.key, "amount_update", payment_reference=ref, amount=total)
        if isinstance(cmd, c.RefundPayment):
            amount = Money(cmd.amount_minor, cmd.currency)
            return Modification(cmd.key, "refund", payment_reference=ref, amount=amount)
        if isinstance(cmd, c.Release) and ref is None:  # its pspReference never reached us
            ours = by_reference(cmd.ref) or sale_reference(cmd.session_id)
            key = self._attempt(cmd.key)
            return Modification(key, "cancel_by_reference", merchant_reference=ours)
        if isinstance(cmd, c.Release):
            return Modification(self._attempt(cmd.key), "cancel", payment_reference=ref)
        raise ModificationRefused(f"{type(cmd).__name__} is not a modification")

    def _attempt(self, key: str) -> str:
        """A cancel the acquirer refused is tried again as a new modification (its own key);
        one still open or done is the same one."""
        current = key
        for n in range(2, CANCEL_ATTEMPTS_MAX + 1):
            stored = self.book.get(current)
            if stored is None or stored.status not in ("failed", "rejected"):
                return current
            current = f"{key}~{n}"
        return current

    def _latest(self, key: str) -> StoredModification | None:
        found = None
        current = key
        for n in range(2, CANCEL_ATTEMPTS_MAX + 2):
            stored = self.book.get(current)
            if stored is None:
                return found
            found, current = stored, f"{key}~{n}"
        return found

    def _answer(self, cmd: c.TerminalCommand, outcome: Outcome, message: str) -> None:
        op = {c.TopUp: Operation.TOPUP, c.Capture: Operation.CAPTURE}.get(type(cmd))
        if isinstance(cmd, c.RefundPayment):
            op = Operation.REFUND
        hold: str | None = getattr(cmd, "ref", None)
        self.take(
            e.TerminalResultArrived(
                session_id=cmd.session_id,
                event_id=f"{cmd.key}:{uuid.uuid4().hex[:8]}",
                operation=op or Operation.RELEASE,
                outcome=outcome,
                message=message,
                for_ref=hold,
                ref=hold if isinstance(cmd, c.TopUp) else None,
            )
        )

    # ---- the session asks: what became of the capture or release? -----------------------------

    def _enquiry(self, cmd: c.QueryOpenPreauths) -> None:
        s = self.host.load(cmd.session_id)
        hold = s.current if s is not None else None
        event_id = f"{cmd.key}:{uuid.uuid4().hex[:8]}"
        if s is None or hold is None:
            self.take(e.OpenPreauthsReported(cmd.session_id, event_id, (), failed=True))
            return
        capture = s.state is State.CAPTURE_UNKNOWN
        stored = self._latest(f"{s.id}:{'capture' if capture else 'release'}:{hold.ref}")
        now = self.host.clock()
        if stored is None:  # never recorded, so never sent: the acquirer still holds it
            self.take(e.OpenPreauthsReported(s.id, event_id, (hold.ref,)))
        elif stored.status in _SETTLED:
            self._close_hold(stored, s)
            for event in outcome_events(stored, s):
                self.take(event)
        elif capture and stored.deadline is not None and stored.deadline <= now:
            # received, and no webhook by the deadline: unconfirmed, never a success
            _LOGGER.warning(
                "acquirer.missing_webhook",
                extra={"session": s.id, "key": stored.modification.command_key},
            )
            self.take(e.OpenPreauthsReported(s.id, event_id, ()))
        else:  # queued, or waiting for its webhook: ask again later
            self.take(e.OpenPreauthsReported(s.id, event_id, (), failed=True))

    def hand_over(self) -> None:
        """Offer each outcome not yet handed over to its session; a refund with no webhook by
        its deadline is ``unknown`` (a capture's and release's deadline is the session's)."""
        now = self.host.clock()
        if len(self._delivered) > DELIVERED_MAX:
            self._delivered.clear()  # offered again: the engine skips what it has applied
        for m in self.book.settled_since(self._since or now - SETTLED_LOOKBACK):
            if m.settled_at is not None:
                self._since = max(self._since or m.settled_at, m.settled_at)
            key = m.modification.command_key
            if self._delivered.get(key) == m.status:
                continue
            self._delivered[key] = m.status
            s = self._session_of(m)
            if s is not None:
                self._close_hold(m, s)
            for event in outcome_events(m, s) if s is not None else []:
                self.take(event)
        for m in self.book.overdue(now):
            key = m.modification.command_key
            if m.modification.kind != "refund" or self._delivered.get(key) == "overdue":
                continue
            self._delivered[key] = "overdue"
            _LOGGER.warning("acquirer.missing_webhook", extra={"key": key})
            s = self._session_of(m)
            if s is not None:
                self.take(
                    e.TerminalResultArrived(
                        session_id=s.id,
                        event_id=f"acquirer:{key}:overdue",
                        operation=Operation.REFUND,
                        outcome=Outcome.UNKNOWN,
                        message="no webhook from the acquirer by the deadline (missing webhook)",
                        refund_id=named[2] if (named := split_key(key)) is not None else None,
                    )
                )

    def _close_hold(self, m: StoredModification, s: Session) -> None:
        """A capture or cancel the acquirer confirmed: the terminal's driver ledger closes the
        hold it names (whatever the session makes of it now)."""
        captured = _CLOSING.get(m.modification.kind)
        named = split_key(m.modification.command_key)
        if m.status == "confirmed" and captured is not None and named is not None:
            self.ledgers(s.terminal, named[2], captured)

    def _session_of(self, m: StoredModification) -> Session | None:
        named = split_key(m.modification.command_key)
        return self.host.load(named[0]) if named is not None else None

    # ---- the loop -----------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Drain each acquirer's queue (woken on a new modification, else every
        DRAIN_EVERY_S) and hand the engine what the webhooks settled."""
        used = sorted(set(self.routes.values()))
        async with aiohttp.ClientSession() as http:
            forwarders = [
                Forwarder(
                    self.book,
                    profile(self.acquirers[name].profile).build(name, self.acquirers[name], http),
                    self.host.clock,
                    webhook_deadline=timedelta(seconds=self.acquirers[name].webhook_deadline_s),
                )
                for name in used
            ]
            while not stopping.is_set():
                self._wake.clear()
                for forwarder in forwarders:
                    try:
                        await forwarder.drain()
                    except StoreError:
                        raise
                    except Exception:  # a bug in one turn must not stop the queue for good
                        _LOGGER.exception("acquirer.drain_failed")
                self.hand_over()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_EVERY_S):
                        await self._wake.wait()
