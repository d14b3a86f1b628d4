"""Whose is the terminal's last result? (moved from ``engine_host``, which asks it)

Why a rule of its own: a terminal repeats its *last* result, not the result of the operation a
session lost. Before that result is taken as evidence for a session, every other session of the
terminal that could have made it must be ruled out; when one cannot be, the result is no
evidence for anyone (the hold is left to its owner or to the orphan sweep).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.payments import events as e
from gateway.payments.record import from_json
from gateway.payments.session import Session, State
from gateway.payments.states import IN_FLIGHT
from gateway.store import Store

IN_FLIGHT_HOLDS = (State.AUTHORIZING, State.TOPPING_UP)  # a fresh hold may exist, not stored yet
MAKING_HOLDS = (*IN_FLIGHT_HOLDS, State.AUTH_UNKNOWN)  # ... or one not yet attributed


def ambiguous(
    store: Store,
    now: datetime,
    session: Session,
    last: e.LastResult,
    asked_at: datetime | None = None,
) -> bool:
    """Could the terminal's last result belong to another session? Yes if another session of
    this terminal knows that receipt, or — since our capture left — started on the terminal
    or lost the result of one of its own operations (whose trace we cannot tell from ours).
    For a lost pre-auth: any other session that may have made its hold (``may_own``)."""
    hold = session.current
    sent = hold.capture_sent_at if hold is not None and hold.capture_sent_at else None
    since = (sent or now) - timedelta(days=2)
    if session.state is State.RELEASE_UNKNOWN:
        # a release proves nothing by its receipt: every session changed since our hold was
        # made may have made the terminal's last result, however long the charge lasted
        since = min(since, session.created_at)
    rows = [r for r in store.sessions_of_terminal(session.terminal, since) if r["id"] != session.id]
    others = [(from_json(r["data"]), r["updated_at"]) for r in rows]
    known = {n for s, _ in others for h in s.holds for n in (h.ref, h.booking_ref) if n is not None}
    # a refund's receipt (reversal or 06 31) is no capture's and no release's proof
    known |= {r.ref for s, _ in others for r in s.refunds if r.ref is not None}
    if last.ref in known:
        return True
    if session.state is State.AUTH_UNKNOWN:
        # A lost pre-auth adopts a hold only if no other session can have made it: the hold
        # is left to its owner or to the orphan sweep (issue 26, found by the reference model).
        return any(may_own(s, last) for s, _ in others)
    if session.state is State.RELEASE_UNKNOWN:
        # A release's result names no hold (a new receipt, 0 or the hold's amount): another
        # session's release or capture looks the same. Only when none of them can have made it
        # is it ours; else the release is proven by its stored result or two absences.
        return any(s.lost_results or refund_out(s) or s.state in IN_FLIGHT for s, _ in others)
    if sent is None:
        return session.state is State.CAPTURE_UNKNOWN
    # a session started after the result was asked (the runner's snapshot at start) did
    # not make it
    changed = [
        s
        for s, updated in others
        if updated >= sent and (asked_at is None or s.created_at < asked_at)
    ]
    return any(
        s.created_at >= sent or s.lost_results or refund_out(s) or s.state in MAKING_HOLDS
        for s in changed
    )


def refund_out(other: Session) -> bool:
    """A refund of ``other`` whose answer is awaited or whose fate is unknown (``pending``): its
    reversal or refund may be the terminal's last result, approved for an amount a capture or a
    release can have too."""
    return any(r.pending for r in other.refunds)


def may_own(other: Session, last: e.LastResult) -> bool:
    """Can ``other`` have made the open hold of this last result, unknown to it? A session making
    a hold, or whose pre-auth was lost and never attributed (within the amount it asked for),
    or whose top-up was lost (its first hold uncertain: the amount cannot tell)."""
    if other.holds and other.holds[0].uncertain:
        return True
    if other.state in MAKING_HOLDS or (other.lost_results and not other.holds):
        return last.amount_minor is None or last.amount_minor <= max(
            other.hold_minor, other.topup_minor
        )
    return False
