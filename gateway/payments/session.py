"""The charging-session payment state machine: ``transition(session, event, now, policy)``
gives the new session and the commands to run. Pure: no I/O, no clock, no randomness.

This is the one way in. Which state may follow which is the table in ``states.py``; each
concern decides in its own module (the folder explains the engine):

- ``authorization.py``: the hold at the card, and a lost pre-auth resolved on evidence;
- ``charging.py``: the charge metered, capped, ended; ``topups.py``: more hold mid-charge;
- ``metering.py``: which energy is billed (``plausibility.py``: which readings can be true);
  ``capture.py``: **what we capture**
  (``capture_plan``);
- ``settlement.py``: what a terminal result proves and what is booked, hold by hold;
  ``lost_settlement.py``: a lost answer decided by the terminal's open holds and last result;
  ``late_evidence.py``: the end-of-day totals deciding an unconfirmed capture;
- ``receipts.py``: the receipt and the CPO's fiscal data; ``corrections.py``: refunds
  (``refund_resume.py``: a refund still sent after a restart, asked about);
- ``timers.py``: deadlines and restarts; ``moves.py``: the table followed, the outcome sent;
- ``model.py``: the session record (core + holds, bill, metering, invoice, refunds).

After every transition the money ledger and the liveness rule are checked (``violations``),
so a test that drives the engine checks them too:

- per hold: captured + released <= held, and a settled hold says how (captured, released,
  lapsed, unconfirmed); the session's held = captured + released + open;
- an amount is captured only on positive evidence (``settlement.py``);
- a final session has nothing open unless it says why: it owes money (``owed_minor``: priced
  but not captured) or a hold lapsed/stays unconfirmed;
- an open session always has a next action and a deadline (its timer), and a session that
  holds money always knows the hold references to settle it with.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from drivers.base import Outcome
from gateway.errors import InvariantViolated
from gateway.payments import events as e
from gateway.payments.authorization import adopt, orphan, preauth_result, start
from gateway.payments.capture_undone import capture_undone
from gateway.payments.charging import (
    after_topup,
    charger_faulted,
    charger_started,
    charger_stopped,
    late_reading,
    meter_value,
    unpaid_energy,
)
from gateway.payments.corrections import (
    debt_resolved,
    price_corrected,
    refund_requested,
    refund_result,
    refund_settled,
    settled_with_correction,
)
from gateway.payments.events import Operation
from gateway.payments.late_evidence import contradicted, evidence_decided
from gateway.payments.lost_settlement import enquiry_answered, enquiry_failed
from gateway.payments.model import (
    BilledTo,
    Hold,
    HoldStatus,
    Reading,
    Session,
    authorization_reference,
)
from gateway.payments.moves import CHARGING_STATES, UNKNOWN_STATES, Transition, outcome_payload
from gateway.payments.plausibility import KEPT, clipped_stop, screen
from gateway.payments.policy import Policy
from gateway.payments.receipts import fiscal_arrived, receipt_facts
from gateway.payments.refund_resume import refund_enquired, refund_resumed
from gateway.payments.settlement import settlement_result
from gateway.payments.states import FINAL, HOLDING, State
from gateway.payments.timers import resumed, timer_fired
from gateway.payments.topups import topup_enquired, topup_result

__all__ = [
    "FINAL",
    "Hold",
    "HoldStatus",
    "Policy",
    "Reading",
    "Session",
    "State",
    "Transition",
    "authorization_reference",
    "outcome_payload",
    "receipt_facts",
    "transition",
    "violations",
]


def transition(
    session: Session | None, event: e.Event, now: datetime, policy: Policy
) -> Transition:
    result = _dispatch(session, event, now, policy)
    after = result.session
    became_final = after is not None and after.final and (session is None or not session.final)
    if became_final and after is not None and after.bill.correction_waiting:
        online = after.terminal in policy.online_deadlines
        # a correction waited for the settlement
        more = settled_with_correction(after, now, acquirer=online)
        result = Transition(more.session, (*result.commands, *more.commands), result.note)
    if result.session is not None and result.session != session:
        problems = violations(result.session)
        if problems:
            raise InvariantViolated(
                f"session {result.session.id} after {type(event).__name__}: {'; '.join(problems)}"
            )
    return result


def _as_printed(s: Session, ev: e.TerminalResultArrived) -> Session:
    """Keep the terminal's ref as its slip prints it (the driver's ``ref_display``), so that the
    FAC, our receipt and the refund report name what the driver and the CPO find on the slip."""
    if not ev.ref or not ev.ref_display or ev.ref_display == ev.ref or ev.ref in s.ref_display:
        return s
    return replace(s, ref_display={**s.ref_display, ev.ref: ev.ref_display})


def _dispatch(session: Session | None, event: e.Event, now: datetime, policy: Policy) -> Transition:
    if session is None:
        if isinstance(event, e.CardPresented):
            return start(event, now, policy)
        if isinstance(event, e.OrphanFound):
            return orphan(event, now, policy)
        return Transition(None, note="no such session")
    if isinstance(event, e.TerminalResultArrived):  # every result's, a refund's too
        session = _as_printed(session, event)
    if isinstance(event, e.RefundRequested):
        return refund_requested(session, event, now)
    if isinstance(event, e.PriceCorrected):
        return price_corrected(session, event, now)
    if isinstance(event, e.TerminalResultArrived) and event.operation in (
        Operation.REFUND,
        Operation.REVERSAL,
    ):
        return refund_result(session, event, now)
    if isinstance(event, e.DebtResolved):
        return debt_resolved(session, event)
    if isinstance(event, e.RefundSettled):
        return refund_settled(session, event, now)
    if isinstance(event, e.CaptureEvidence):
        return evidence_decided(session, event, now, policy)
    if isinstance(event, e.OutcomeContradicted):
        return contradicted(session, event)
    if isinstance(event, e.CaptureUndone):
        return capture_undone(session, event)
    if session.final:
        if isinstance(event, e.Resumed):  # a refund whose answer the restart lost is asked
            return refund_resumed(session)
        if isinstance(event, e.OpenPreauthsReported):
            return refund_enquired(session, event, now)
        if isinstance(event, e.FiscalDataArrived):
            return fiscal_arrived(session, event, now, policy)
        if isinstance(event, e.ChargerStopped):
            return unpaid_energy(session, event, now, policy)
        if isinstance(event, e.MeterValue) and session.metering.billed_to is BilledTo.LAST_TRUSTED:
            return late_reading(session, event)
        return Transition(session, note="final: ignored")
    charging = session.state in CHARGING_STATES
    rated = policy.rated_power_w.get(session.evse)
    if why := screen(session, event, now, rated, charging):
        more = (why,) if len(session.discrepancies) < KEPT else ()
        ending = session.state is State.STOPPING  # the charger answers our stop: the end
        clip = clipped_stop(session, event, now, rated) if ending else None
        if clip is not None:  # billed up to the plausible allowance, the rest on record
            session = replace(session, discrepancies=(*session.discrepancies, *more, clip[1]))
            return charger_stopped(session, clip[0], now, policy)
        return Transition(replace(session, discrepancies=(*session.discrepancies, *more)), note=why)
    match event:
        case e.TerminalResultArrived():
            return _terminal_result(session, event, now, policy)
        case e.OpenPreauthsReported():
            return _open_preauths(session, event, now, policy)
        case e.ChargerStarted():
            return charger_started(session, event, now, policy)
        case e.MeterValue():
            return meter_value(session, event, now, policy)
        case e.ChargerStopped():
            return charger_stopped(session, event, now, policy)
        case e.ChargerFaulted():
            return charger_faulted(session, event, now, policy)
        case e.TimerFired():
            return timer_fired(session, event, now, policy)
        case e.Resumed():
            return resumed(session, now, policy)
        case e.FiscalDataArrived():
            return fiscal_arrived(session, event, now, policy)
    return Transition(session, note="ignored")


# The operation whose approval, stored before it is acknowledged, waits in ``held_result``.
_PROVISIONAL_IN = {
    Operation.PREAUTHORIZE: State.AUTHORIZING,
    Operation.TOPUP: State.TOPPING_UP,
    Operation.CAPTURE: State.CAPTURING,
    Operation.RELEASE: State.RELEASING,
}


_SETTLE = (Operation.CAPTURE, Operation.RELEASE)


def _terminal_result(
    s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy
) -> Transition:
    if ev.provisional and ev.outcome is Outcome.APPROVED and ev.operation in _PROVISIONAL_IN:
        # Approved but not yet acknowledged: the terminal reverses it if our 80 00 never
        # arrives (ZVT 2.2.8), so it is evidence for the enquiry after a crash, not the outcome
        # (and a top-up does not raise the cap until it stands). A refusal moves no money.
        # a capture's or release's approval stored only for the hold being settled: one naming
        # another hold of the session would later be read as this hold's (attack probe)
        other = s.current is not None and ev.for_ref not in (None, s.current.ref)
        if s.state is _PROVISIONAL_IN[ev.operation] and not (other and ev.operation in _SETTLE):
            held = e.LastResult(
                approved=True, ref=ev.ref, amount_minor=ev.amount_minor, trace_no=ev.trace_no
            )
            return Transition(replace(s, held_result=held))
        return Transition(s, note="provisional result: not awaited")
    if s.held_result is not None and ev.outcome is not Outcome.UNKNOWN:
        # A lost answer (the line dropped after the approval came) decides nothing: the stored
        # approval stays as evidence for the enquiry that follows (issue 26, item 5).
        s = replace(s, held_result=None)
    if ev.operation == Operation.PREAUTHORIZE:
        return preauth_result(s, ev, now, policy)
    if ev.operation == Operation.TOPUP:
        return after_topup(topup_result(s, ev, now, policy), now, policy)
    return settlement_result(s, ev, now, policy)


def _open_preauths(
    s: Session, ev: e.OpenPreauthsReported, now: datetime, policy: Policy
) -> Transition:
    if s.topup_asked and s.topup_minor:  # asked about a top-up whose answer was lost
        return after_topup(topup_enquired(s, ev, now, policy), now, policy)
    if s.state not in UNKNOWN_STATES:
        return Transition(s, note="open pre-auths: not waiting for them")
    if ev.failed:
        return enquiry_failed(s, now, policy, busy=ev.busy)
    held = s.held_result  # used up by this answer, whatever it says
    if held is not None:
        s = replace(s, held_result=None)
    if s.state is State.AUTH_UNKNOWN:
        return adopt(s, ev, now, policy, held)
    return enquiry_answered(s, ev, now, policy, held)


def violations(s: Session) -> list[str]:
    """What is wrong with a session's money or liveness; empty when all is well."""
    out = []
    for h in s.holds:
        if h.captured_minor < 0 or h.released_minor < 0 or h.open_minor < 0:
            out.append(
                f"hold {h.ref}: captured {h.captured_minor} + released {h.released_minor} > held"
            )
        settled = h.status in (HoldStatus.CAPTURED, HoldStatus.RELEASED)
        if settled != (h.open_minor == 0) and h.amount_minor:
            out.append(f"hold {h.ref} is {h.status} with {h.open_minor} open")
    if s.captured_minor > s.authorized_minor:
        out.append(f"captured {s.captured_minor} > held {s.authorized_minor}")
    # refunds above what is captured only by the refunds given before their capture was undone
    before_undo = s.bill.refunded_before_undo_minor
    if s.refundable_minor + before_undo < 0:
        out.append(f"refunds {s.captured_minor - s.refundable_minor} > captured {s.captured_minor}")
    if not 0 <= before_undo <= s.refunded_minor:
        out.append(f"refunded before an undo {before_undo} outside 0..{s.refunded_minor} refunded")
    if s.final:
        owed = s.bill.owed_minor
        explained = owed > 0 or any(
            h.status in (HoldStatus.LAPSED, HoldStatus.UNCONFIRMED) for h in s.holds
        )
        if s.open_minor and not explained:
            out.append(f"final with {s.open_minor} open and nothing owed or lapsed")
        # a person's resolution or the CPO's corrected total may leave nothing owed
        accounted = bool(s.bill.debt_resolved) or s.bill.corrected_minor is not None
        if (
            s.state in (State.CAPTURE_FAILED, State.CAPTURE_UNCONFIRMED)
            and owed <= 0
            and not accounted
        ):
            out.append(f"{s.state} without an amount owed")
    else:
        if s.timer is None:
            out.append(f"open in {s.state} without a next action and deadline")
        if s.state in HOLDING and not s.holds:
            out.append(f"{s.state} without a hold to settle")
    return out
