"""What a settled modification means for its session: the engine events an acquirer's outcome
becomes (moved from ``acquirer_runner``, which sends and hands over).

Why apart: the runner decides *when* (queue, drain, hand over once); this decides *what*, from
the stored modification and the session as it is now, and nothing else. A webhook that comes
after the session moved on means nothing, or is late evidence (an unconfirmed capture), or
contradicts a booked success: a capture's booking is undone (``payments/capture_undone.py``),
a refund's is a discrepancy for a person; either once (a restart offers them again).
"""

from __future__ import annotations

import logging

from drivers.base import Outcome
from gateway.payments import events as e
from gateway.payments.events import Operation
from gateway.payments.model import Hold, HoldStatus, Session
from gateway.payments.refunds import RefundStatus
from gateway.payments.states import State
from gateway.store.acquirer import StoredModification

_LOGGER = logging.getLogger(__name__)

_MARKS = {":capture:": "capture", ":release:": "release", ":topup:": "topup", ":refund:": "refund"}
_CAPTURING = (State.CAPTURING, State.CAPTURE_UNKNOWN, State.CAPTURE_RETRY)
_RELEASING = (State.RELEASING, State.RELEASE_UNKNOWN, State.RELEASE_RETRY)


def split_key(command_key: str) -> tuple[str, str, str] | None:
    """(session id, command kind, the hold or refund it names) of an engine command key."""
    for mark, kind in _MARKS.items():
        session, found, rest = command_key.partition(mark)
        if found and session:
            return session, kind, rest.split("~", 1)[0]
    return None


def hold_of(s: Session, ref: str) -> Hold | None:
    """The session's hold named by a text ref."""
    return next((h for h in s.holds if h.ref == ref), None)


def outcome_events(m: StoredModification, s: Session) -> list[e.Event]:
    """The engine events a settled modification means for its session as it is now."""
    key, kind = m.modification.command_key, m.modification.kind
    named = split_key(key)
    ok = m.status == "confirmed"
    why = m.outcome_reason or m.last_error or ("confirmed" if ok else m.status)
    eid = f"acquirer:{key}:{m.status}"
    if named is None:
        return []
    if kind == "refund":  # in flight, or marked unknown at its deadline
        waiting = (RefundStatus.SENT, RefundStatus.UNKNOWN)
        done = any(r.id == named[2] and r.status is RefundStatus.DONE for r in s.refunds)
        if not ok and done:  # REFUND_FAILED after REFUND: the money did not go back
            return _contradiction(s, key, m.status, why)
        by_hand = any(r.id == named[2] and r.settled_by for r in s.refunds)
        if not by_hand and not any(r.id == named[2] and r.status in waiting for r in s.refunds):
            return []
        # a refund a person settled: the engine checks the webhook against them
        return [modification_result(s.id, eid, Operation.REFUND, ok, why, m, refund=named[2])]
    if kind == "amount_update":  # a top-up raises the session's first hold
        if not s.topup_minor or not s.holds:  # none awaited (given up as lost)
            return []
        return [modification_result(s.id, eid, Operation.TOPUP, ok, why, m, topup=s.holds[0])]
    hold = hold_of(s, named[2])
    if hold is None:
        return []
    capture = kind == "capture"
    unconfirmed = s.state is State.CAPTURE_UNCONFIRMED and hold.status is HoldStatus.UNCONFIRMED
    if capture and unconfirmed:  # a late webhook is evidence, only for the hold it names
        code = "CAPTURE" if ok else f"{m.status} ({why})"
        evidence = f"the acquirer's webhook for {key}: {code}"
        return [_evidence(s, key, m.status, captured=ok, evidence=evidence)]
    if s.state not in (_CAPTURING if capture else _RELEASING) or hold is not s.current:
        booked = HoldStatus.CAPTURED if capture else HoldStatus.RELEASED
        if ok or hold.status is not booked:
            return []
        if capture:  # CAPTURE_FAILED after the CAPTURE that was booked: undone
            return _undone(s, key, m.status, why, hold)
        return _contradiction(s, key, m.status, why)
    op = Operation.CAPTURE if capture else Operation.RELEASE
    if ok or s.state in (State.CAPTURING, State.RELEASING):
        return [modification_result(s.id, eid, op, ok, why, m, hold=hold)]
    enquiry = f"acquirer-enquiry:{key}:{m.status}"
    if s.state is State.RELEASE_UNKNOWN:  # the cancel failed: the hold stands
        return [e.OpenPreauthsReported(s.id, enquiry, (hold.ref,))]
    if s.state is State.CAPTURE_UNKNOWN:  # the capture failed: nothing taken
        evidence = f"the acquirer's answer for {key}: {m.status} ({why})"
        return [
            e.OpenPreauthsReported(s.id, enquiry, ()),
            _evidence(s, key, m.status, captured=False, evidence=evidence),
        ]
    return []  # waiting to try again: the retry asks


def modification_result(
    session_id: str,
    event_id: str,
    op: Operation,
    ok: bool,
    why: str,
    m: StoredModification,
    *,
    hold: Hold | None = None,
    topup: Hold | None = None,
    refund: str | None = None,
) -> e.TerminalResultArrived:
    amount = m.modification.amount
    return e.TerminalResultArrived(
        session_id=session_id,
        event_id=event_id,
        operation=op,
        outcome=Outcome.APPROVED if ok else Outcome.DECLINED,
        # a top-up's webhook confirms the new total; the session adds what it asked
        amount_minor=amount.minor if amount is not None and topup is None else None,
        ref=topup.ref if topup is not None else None,
        message=f"acquirer: {why}",
        for_ref=hold.ref if hold is not None else None,
        refund_id=refund,
    )


def _evidence(
    s: Session, key: str, status: str, *, captured: bool, evidence: str
) -> e.CaptureEvidence:
    return e.CaptureEvidence(
        session_id=s.id,
        event_id=f"acquirer-evidence:{key}:{status}",
        captured=captured,
        evidence=evidence,
    )


def _detail(key: str, status: str, why: str) -> str:
    return (
        f"the acquirer reported {status} ({why}) for {key} after its success was "
        "booked: check the acquirer's report"
    )


def _known(s: Session, detail: str) -> bool:
    """Is this contradiction on the session already? Then it is not news: a restart offers the
    settled outcomes again (the lookback), and only a new one is logged and handed over."""
    return any(detail in d for d in s.discrepancies)


def _undone(s: Session, key: str, status: str, why: str, hold: Hold) -> list[e.Event]:
    """A failure reported after the capture was booked: the booking is undone by the engine
    (``payments/capture_undone.py``), once."""
    detail = _detail(key, status, why)
    if _known(s, detail):
        return []
    _LOGGER.warning("acquirer.capture_undone", extra={"session": s.id, "key": key})
    eid = f"acquirer-undone:{key}:{status}"
    return [e.CaptureUndone(session_id=s.id, event_id=eid, ref=hold.ref, detail=detail)]


def _contradiction(s: Session, key: str, status: str, why: str) -> list[e.Event]:
    """A failure reported after the success was booked (a refund's): recorded on the session
    as a discrepancy for a person to check, never undone by a guess; logged once."""
    detail = _detail(key, status, why)
    if _known(s, detail):
        return []
    _LOGGER.warning("acquirer.contradicted", extra={"session": s.id, "key": key})
    eid = f"acquirer-contradiction:{key}:{status}"
    return [e.OutcomeContradicted(session_id=s.id, event_id=eid, detail=detail)]
