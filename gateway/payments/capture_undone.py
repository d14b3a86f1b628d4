"""A booked capture the acquirer reports failed after all: the booking is undone.

Adyen documents that CAPTURE_FAILED can follow a successful CAPTURE (the capture was accepted,
then the scheme or issuer refused it). Both are the acquirer's own reports about the same
capture, and the later one is its last word: keeping the booking would count money we do not
have and leave the CPO with a FAC that says it was captured. So the hold's capture is no
longer counted, its amount is owed (a visible debt, the session ``capture_failed``), the
discrepancy and the journal say why, and the CPO gets a corrected FAC for the same
authorization_reference (``ocpi/fac.py``: its own id, ``<session>-C``, a later hold's
``-C<n>``). The hold is marked lapsed: what the acquirer still holds of it is the session's,
never taken again by a guess.

Refunds already given (done) from the capture were paid out of money we never received: the
customer keeps them and the undone capture is owed whole (the price, plus what was given back).
They stay recorded as refunds; ``Bill.refunded_before_undo_minor`` names the part of them that
now stands above what is captured, the one case the ledger invariant allows
(``session.violations``), and the discrepancy says so for a person.

A session that is not final (still settling another hold, or waiting for its receipt), or one
with a refund of the capture still in flight (its outcome would change what was given), keeps
the older rule for now: a discrepancy for a person (``settlement.contradicted``); the next
outcome it sends is computed from its holds as they are then.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.late_evidence import contradicted
from gateway.payments.model import HoldStatus, Session, replace_hold, update
from gateway.payments.moves import Transition, go, note, outcome_payload
from gateway.payments.plausibility import KEPT
from gateway.payments.states import State, Trigger

# Final states whose booked capture can be undone: the outcome already went upstream.
_UNDOABLE = (State.COMPLETED, State.CAPTURE_FAILED, State.CAPTURE_UNCONFIRMED)


def capture_undone(s: Session, ev: e.CaptureUndone) -> Transition:
    hold = next((h for h in s.holds if h.ref == ev.ref), None)
    if hold is None or hold.status is not HoldStatus.CAPTURED or not hold.captured_minor:
        return Transition(s, note=f"capture undone: hold {ev.ref} has no booked capture")
    if s.state not in _UNDOABLE:
        return contradicted(
            s, e.OutcomeContradicted(session_id=s.id, event_id=ev.event_id, detail=ev.detail)
        )
    amount = hold.captured_minor
    given = max(0, amount - s.refundable_minor)  # refunds that only this capture covered
    if given and any(r.pending for r in s.refunds):
        # a refund from this capture is on its way: what it gives is not known yet; a person
        # settles it against the acquirer's report, the booking kept as in ``contradicted``
        why = f"{ev.detail}; not undone: refunds of {given} were given from it"
        return contradicted(
            s, e.OutcomeContradicted(session_id=s.id, event_id=ev.event_id, detail=why)
        )
    s = replace_hold(s, hold, replace(hold, captured_minor=0, status=HoldStatus.LAPSED))
    why = f"{ev.detail}: the capture of {amount} is undone and owed"
    if given:
        why += f" (refunds of {given} were given from it: paid out of money never received)"
    more = (why,) if len(s.discrepancies) < KEPT else ()
    s = update(
        s,
        owed_minor=s.bill.owed_minor + amount,
        refunded_before_undo_minor=s.bill.refunded_before_undo_minor + given,
        discrepancies=(*s.discrepancies, *more),
        notes=note(s, why),
    )
    if s.state is State.CAPTURE_UNCONFIRMED:  # its outcome waits for the evidence: no FAC yet
        return Transition(s)
    if s.state is State.COMPLETED:
        s = go(s, Trigger.CAPTURE_UNDONE)
    payload = {
        **outcome_payload(s),
        "debt_only": False,
        "correction_of": s.id[:36],
        "correction_no": 1 + [h.ref for h in s.holds].index(hold.ref),  # its FAC id (fac.py)
    }
    sent = c.Enqueue(f"{s.id}:undone:{hold.ref}", f"session:{s.id}", "session.outcome", payload)
    return Transition(s, (sent,))
