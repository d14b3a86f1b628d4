"""A refund still ``sent`` after a restart: its command went out and the crash lost its answer.

A refund is a record on a final session, which has no timer of its own, so without this
nothing would ever ask about it again and it would stay ``sent`` for good. It is never sent
again blindly: a second 06 30 / 06 31 could pay the driver twice. Instead:

- a terminal's refund (reversal or card-present refund) is asked about by the same enquiry a
  lost capture gets (``QueryOpenPreauths``): the terminal repeats its last result, as it stood
  when the daemon started, before any new transaction could overwrite it. The refund is
  ``done`` only when that result is the approval we stored before the crash (same receipt,
  approved: the terminal's word that the refund stood, as ``TerminalRunner._stood`` reads a
  live one) of a reversal (06 30 goes back to the payment's own card). A card-present refund
  (06 31) so repeated stays ``unknown``: the repeat does not say which card was paid.
  Anything else — another result, no stored approval, no answer at all — makes it
  ``unknown`` too: a visible record that reconciliation lists (``refund_unsettled``) until a person
  settles it against the terminal's journal (``evpay sessions refund-resolve``). Never
  ``failed`` on absence of evidence: that would let a second refund of the same money follow.
- an acquirer's refund is handed to the acquirer runner again under its own command key: its
  book records a modification once and the acquirer takes the key as its idempotency key, so
  this repeats nothing; it only makes sure a refund whose step was stored but whose
  modification was not (a crash in between) is sent, and that a webhook already stored is
  handed over. The webhook, or its deadline (``unknown``), decides as for any acquirer refund.
"""

from __future__ import annotations

from datetime import datetime

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.corrections import refund_result
from gateway.payments.model import Session
from gateway.payments.moves import Transition
from gateway.payments.refunds import Refund, RefundMethod, RefundStatus


def sent_refund(s: Session) -> Refund | None:
    """The session's refund whose answer we are waiting for (at most one is in flight)."""
    return next((r for r in s.refunds if r.status is RefundStatus.SENT), None)


def enquiry_key(s: Session, refund: Refund) -> str:
    """The command key of the enquiry about a refund: its answer's event id begins with it."""
    return f"{s.id}:refund-enquiry:{refund.id}"


def refund_resumed(s: Session) -> Transition:
    """After a restart, the next action for a final session's refund still ``sent``."""
    sent = sent_refund(s)
    if sent is None:
        return Transition(s, note="final: ignored")
    if sent.method is RefundMethod.ACQUIRER:
        booking = next((h.ref for h in s.holds if h.captured_minor), None)
        again = c.RefundPayment(
            key=f"{s.id}:refund:{sent.id}",  # the key it was sent under: one modification
            session_id=s.id,
            terminal=s.terminal,
            method=sent.method.value,
            ref=booking,
            amount_minor=sent.amount_minor,
            currency=s.currency,
        )
        return Transition(s, (again,), note=f"refund {sent.id}: handed to the acquirer again")
    ask = c.QueryOpenPreauths(enquiry_key(s, sent), s.id, s.terminal)
    return Transition(s, (ask,), note=f"refund {sent.id} sent before the restart: asked")


def refund_enquired(s: Session, ev: e.OpenPreauthsReported, now: datetime) -> Transition:
    """The terminal's answer to ``refund_resumed``'s enquiry decides the refund: ``done`` on
    the stored approval repeated, else ``unknown`` (for a person, with what the terminal said)."""
    sent = sent_refund(s)
    if sent is None or not ev.event_id.startswith(enquiry_key(s, sent) + ":"):
        return Transition(s, note="final: ignored")
    op = e.Operation.REVERSAL if sent.method is RefundMethod.REVERSAL else e.Operation.REFUND
    last = ev.last
    # a receipt the session's pre-auth or capture carries (a terminal that names the reversed
    # payment in the reversal's result) repeated is that payment's result, no proof of ours
    own = {n for h in s.holds for n in (h.ref, h.booking_ref) if n is not None}
    stood = (
        not ev.failed
        and last is not None
        and last.approved
        and sent.ref is not None
        and last.ref == sent.ref
        and sent.ref not in own
    )
    if stood and last is not None and sent.method is not RefundMethod.REFUND:
        said = f"the terminal's last result after the restart repeats its approval {last.ref}"
        answer = e.TerminalResultArrived(
            session_id=s.id,
            event_id=ev.event_id,
            operation=op,
            outcome=Outcome.APPROVED,
            amount_minor=last.amount_minor,
            ref=last.ref,
            ref_display=last.ref_display,
            message=said,
        )
        return refund_result(s, answer, now)
    if stood and last is not None:
        # 06 31 pays the card presented, and the repeat names no card: paid, but whether to
        # the driver's card (``corrections._other_card``) is for a person to read
        why = f"the terminal repeats its approval {last.ref}, but not the card it paid"
    else:
        why = _shown(ev)
    unknown = e.TerminalResultArrived(
        session_id=s.id,
        event_id=ev.event_id,
        operation=op,
        outcome=Outcome.UNKNOWN,
        message=f"answer lost by a restart; {why}: check the terminal's journal",
    )
    return refund_result(s, unknown, now)


def _shown(ev: e.OpenPreauthsReported) -> str:
    """What the terminal's answer to the enquiry showed, in words, for the person who settles."""
    last = ev.last
    if ev.failed:
        return "the terminal could not be asked"
    if last is None:
        return "the terminal repeated no last result"
    what = "approved" if last.approved else "not approved"
    return f"its last result is {what} (receipt {last.ref}, amount {last.amount_minor})"
