"""After an end of day: what its totals prove about the terminal's unconfirmed captures.

The host stores the closed batch, then hands it here. The candidates are the sessions of the
terminal that ended ``capture_unconfirmed`` with every unconfirmed capture sent inside the
batch's period; the journal's own captures of the period are counted as reconciliation counts
them (``batch_totals.journal_totals``), and the rule is ``evidence.decide_by_totals``. A decision
goes to its session as ``CaptureEvidence`` (one store step, its outcome released upstream); a
batch that decides nothing is journaled with its reason, and the sessions stay listed by
reconciliation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from drivers.base import TerminalResult
from gateway.payments import events as e
from gateway.payments.batch_totals import journal_totals
from gateway.payments.evidence import Unconfirmed, Verdict, decide_by_totals
from gateway.payments.model import HoldStatus, Session
from gateway.payments.reconcile_facts import BatchFacts, session_facts
from gateway.payments.record import from_json
from gateway.payments.refunds import RefundStatus
from gateway.payments.schemes import brand_group
from gateway.store import JournalEntry, Step, Store

# Without an earlier end of day, how far back a capture may have been sent into this batch.
FIRST_BATCH_DAYS = 31
_PENDING = (RefundStatus.SENT.value, RefundStatus.UNKNOWN.value)  # its fate not known


def candidate(s: Session, start: datetime | None, at: datetime) -> Unconfirmed | None:
    """The session's unconfirmed captures, if all were sent inside the batch's period."""
    holds = [h for h in s.holds if h.status is HoldStatus.UNCONFIRMED]
    sent = [h.capture_sent_at for h in holds]
    if not holds or any(t is None or t > at or (start and t <= start) for t in sent):
        return None
    amount = sum(h.target_minor or 0 for h in holds)
    return Unconfirmed(session_id=s.id, group=brand_group(s.card), amount_minor=amount)


def decide_unconfirmed(
    store: Store,
    handle: Callable[[e.Event], object],
    *,
    terminal: str,
    currency: str,
    start: datetime | None,
    at: datetime,
    result: TerminalResult,
) -> None:
    """Decide the batch's unconfirmed captures by its totals in ``currency`` (only when the
    terminal sent totals or a batch: without them, no evidence either way)."""
    if result.batch_range is None and not result.totals:
        return
    rows = store.sessions_of_terminal(terminal, start or at - timedelta(days=FIRST_BATCH_DAYS))
    unconfirmed = [
        from_json(r["data"])
        for r in rows
        if r["state"] == "capture_unconfirmed" and r["data"].get("currency") == currency
    ]
    candidates = [x for s in unconfirmed if (x := candidate(s, start, at)) is not None]
    if not candidates:
        return
    undecided = []
    pending = sorted(
        r["id"]
        for r in rows
        if r["data"].get("currency") == currency
        and any(f.get("status") in _PENDING for f in r["data"].get("refunds", ()))
    )
    if pending:
        # A refund whose fate we do not know may have lowered the terminal's totals by what
        # an unconfirmed capture raised them: the totals cannot tell the two apart.
        why = f"refunds of unknown fate on the terminal ({', '.join(pending)}): undecided"
        data = {"verdict": Verdict.UNDECIDED.value, "evidence": why}
        undecided = [
            JournalEntry("session", c.session_id, "capture.evidence", data) for c in candidates
        ]
        store.apply(Step(f"eod:{terminal}:{at.isoformat()}:undecided", journal=undecided))
        return
    totals = {t.brand: (t.count, t.amount_minor) for t in result.totals if t.currency == currency}
    batch = BatchFacts(terminal, start, at, currency, totals)
    count, amount, _ = journal_totals(batch, [session_facts(r) for r in rows])
    journal = {g: (count.get(g, 0), amount.get(g, 0)) for g in set(count) | set(amount)}
    decisions = decide_by_totals(candidates, terminal=totals, journal=journal)
    for session_id, decision in sorted(decisions.items()):
        if decision.verdict is Verdict.UNDECIDED:
            data = {"verdict": decision.verdict.value, "evidence": decision.evidence}
            undecided.append(JournalEntry("session", session_id, "capture.evidence", data))
            continue
        handle(
            e.CaptureEvidence(
                session_id=session_id,
                event_id=f"eod:{terminal}:{at.isoformat()}",
                captured=decision.verdict is Verdict.CAPTURED,
                evidence=decision.evidence,
            )
        )
    if undecided:
        store.apply(Step(f"eod:{terminal}:{at.isoformat()}:undecided", journal=undecided))
