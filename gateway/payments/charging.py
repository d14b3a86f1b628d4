"""The charge itself: started, metered, capped (a top-up or a stop), ended and billed.

Every meter value is priced as it comes (incrementally); the charge stops when the cost
reaches the hold less the safety margin, or before the hold's validity ends. At the end the
bill is ``capture.capture_plan``; energy reported for a session that never billed it is a debt
of its own (``unpaid_energy``), never dropped.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.capture import (
    apply_plan,
    capture_plan,
    chargeable,
    price_of,
    priced,
    release_all,
)
from gateway.payments.events import TimerKind
from gateway.payments.metering import record_meter
from gateway.payments.model import BilledTo, Reading, Session, update
from gateway.payments.moves import (
    CHARGING_STATES,
    Transition,
    charging_timer,
    first_hold_uncertain,
    go,
    note,
    outcome_payload,
)
from gateway.payments.plausibility import KEPT, implausible
from gateway.payments.policy import Policy
from gateway.payments.preauth import topup
from gateway.payments.settlement import settle_command
from gateway.payments.states import State, Trigger
from gateway.payments.topups import ask_topup


def charger_started(s: Session, ev: e.ChargerStarted, now: datetime, policy: Policy) -> Transition:
    if s.state is not State.AUTHORIZED:
        return Transition(s, note="charger started: not expected")
    s = update(s, meter_start_wh=ev.meter_wh, readings=(Reading(now, 0, True),))
    s = go(s, Trigger.STARTED)
    return Transition(replace(s, timer=charging_timer(s, now, policy)))


def meter_value(s: Session, ev: e.MeterValue, now: datetime, policy: Policy) -> Transition:
    if ev.signed is not None:
        s = record_meter(s, ev.signed)
    m = s.metering
    if stopped_awaiting_topup(s):  # the charge has ended; its bill waits for a top-up
        return Transition(s, note="meter value after the charge ended: ignored")
    if m.billed_to is BilledTo.LAST_TRUSTED:
        return late_reading(s, ev)
    if s.state not in CHARGING_STATES or m.meter_start_wh is None:
        return Transition(s, note="meter value: not charging")
    energy = ev.meter_wh - m.meter_start_wh
    if m.readings and (now < m.readings[-1].at or energy < m.readings[-1].energy_wh):
        return Transition(s, note="meter value out of order: ignored")
    readings = (*m.readings, Reading(now, energy, ev.trusted))
    s = priced(s, readings, policy, readings=readings)
    if s.state is State.STOPPING:
        return Transition(s)
    if s.state is State.CHARGING and s.evse in policy.meter_silence:  # heard from: it restarts
        s = replace(s, timer=charging_timer(s, now, policy))
    can_topup = (
        s.state is State.CHARGING and not s.topup_refused and s.terminal in policy.topup_terminals
    )
    price = s.bill.price_minor
    declared = s.target_amount_minor
    margin = policy.safety_margin(s.route)
    if declared is not None and price >= declared - margin:
        return stop(s, now, policy, "the driver's declared amount reached")
    if s.target_energy_wh is not None and energy >= s.target_energy_wh:
        return stop(s, now, policy, "the driver's declared energy reached")
    extra = topup(policy.hold_of(s.route), s.authorized_minor, price) if can_topup else None
    if extra:
        return ask_topup(s, extra, now, policy)
    if price >= s.authorized_minor - margin:
        return stop(s, now, policy, "cost cap reached")
    free = policy.free_vend_cap(s)
    if free is not None and energy >= free:
        return stop(s, now, policy, f"free vend cap of {free} Wh reached")
    return Transition(s)


def charger_stopped(s: Session, ev: e.ChargerStopped, now: datetime, policy: Policy) -> Transition:
    if ev.signed is not None:
        s = record_meter(s, ev.signed)
    if s.metering.meter_start_wh is None and _reported_energy(s, ev) > 0:  # charged unbeknown
        s = unpaid_energy(s, ev, now, policy).session or s
    if s.state is State.AUTHORIZED:
        s = go(
            s, Trigger.NOT_STARTED, stop_reason=ev.reason, notes=note(s, "charging never started")
        )
        return settle_command(release_all(s), now, policy)
    if late_report(s):
        return late_stop(s, ev, now, policy)
    if s.state not in CHARGING_STATES or s.metering.meter_start_wh is None:
        return Transition(s, note="charger stopped: not charging")
    s = update(
        s,
        stop_reason=s.stop_reason or ev.reason,
        invoicer=ev.invoicer,
        invoice_reference=ev.invoice_reference,
        reported_energy_wh=ev.session_energy_wh,
        stop_meter_wh=ev.meter_wh,
        stopped_at=now,
        billed_to=BilledTo.STOP,
    )
    return bill(s, now, policy)


def charger_faulted(s: Session, ev: e.ChargerFaulted, now: datetime, policy: Policy) -> Transition:
    if s.state is State.AUTHORIZED:
        s = go(
            s,
            Trigger.NOT_STARTED,
            stop_reason=ev.reason,
            notes=note(s, f"charger fault: {ev.reason}"),
        )
        return settle_command(release_all(s), now, policy)
    if s.state not in CHARGING_STATES:
        return Transition(s, note="fault: not charging")
    stop_cmd = c.StopCharger(f"{s.id}:stop:fault", s.id, s.evse, ev.reason)
    s = update(
        s,
        stop_reason=ev.reason,
        notes=note(s, f"billed to last trusted reading: {ev.reason}"),
        billed_to=BilledTo.LAST_TRUSTED,
    )
    done = bill(s, now, policy)
    return Transition(done.session, (stop_cmd, *done.commands))


def stop_unconfirmed(s: Session, now: datetime, policy: Policy) -> Transition:
    """The charger never confirmed the stop: bill the last trusted reading. After a meter
    silence the gap it leaves unbilled is on the record (a discrepancy), for reconciliation."""
    s = update(
        s,
        notes=note(s, "no stop confirmation: billed to last reading"),
        billed_to=BilledTo.LAST_TRUSTED,
    )
    if s.stop_reason == SILENT:
        last = s.metering.billed_readings()[-1]
        gap = f"meter silent: billed to the last trusted reading ({last.energy_wh} Wh at "
        s = replace(
            s,
            discrepancies=(
                *s.discrepancies,
                f"{gap}{last.at.isoformat()}); nothing heard from "
                f"{s.metering.readings[-1].at.isoformat()} to {now.isoformat()}",
            ),
        )
    return bill(s, now, policy)


SILENT = "meter silent"  # the stop reason of a charge stopped for its meter's silence


def ask_state(s: Session, now: datetime, policy: Policy) -> Transition:
    """No reading for the EVSE's meter-silence deadline: ask the charger for its state first (a
    live charger answers with a reading, which restarts the deadline, or with its stop or
    fault, billed as usual); ``silent`` follows only if it says nothing in ``state_wait``."""
    since = s.metering.readings[-1].at if s.metering.readings else s.created_at
    s = update(
        s,
        notes=note(s, f"no meter reading since {since.isoformat()}: asking the charger"),
        timer=(TimerKind.STATE, now + policy.state_wait),
    )
    return Transition(s, (c.RequestChargerState(f"{s.id}:state:{now.isoformat()}", s.id, s.evse),))


def silent(s: Session, now: datetime, policy: Policy) -> Transition:
    """Asked for its state, the charger said nothing: stop it (a charger that wakes answers with
    its stop report, billed as usual); with no answer before the stop timeout the last trusted
    reading is billed with the gap on the record (``stop_unconfirmed``) — nothing delivered:
    the hold is released."""
    since = s.metering.readings[-1].at if s.metering.readings else s.created_at
    s = update(s, notes=note(s, f"no answer, no meter reading since {since.isoformat()}: stopping"))
    return stop(s, now, policy, SILENT)


def bill(s: Session, now: datetime, policy: Policy) -> Transition:
    """The charge has ended: capture as planned, or release everything when nothing is billed.
    A top-up still out may add to what is held: the bill waits for its answer (at most the
    answer timeout; ``after_topup``), so that money held for the price is captured, not
    released with the price left owing (found by the reference model)."""
    if s.topup_minor and s.state in (State.TOPPING_UP, State.STOPPING):
        timer = s.timer if s.state is State.TOPPING_UP else None
        waiting = timer or (TimerKind.ANSWER, now + policy.answer_timeout)
        return Transition(replace(s, timer=waiting), note="billed when the top-up answers")
    plan = capture_plan(s, policy)
    s = apply_plan(s, plan)
    free = policy.free_vend_cap(s)
    if free is not None:  # energy given away is a record too, never silent
        given = f"free vend: {plan.energy_wh} Wh given (cap {free} Wh)"
        s = update(s, notes=note(s, given))
    if s.topup_minor and s.holds:  # a top-up still out may raise the first hold before we capture
        s = first_hold_uncertain(s)
    s = go(s, Trigger.BILL if plan.capture_minor else Trigger.NOTHING_TO_BILL, attempts=0)
    return settle_command(s, now, policy)


def stopped_awaiting_topup(s: Session) -> bool:
    """Has the charge ended (``bill``) while a top-up was out, so its bill waits for it?"""
    return s.metering.billed_to is not BilledTo.NOT_YET and s.state in (
        State.TOPPING_UP,
        State.STOPPING,
    )


def after_topup(t: Transition, now: datetime, policy: Policy) -> Transition:
    """The top-up answered (or was given up as lost): a charge that ended meanwhile is billed."""
    s = t.session
    if s is None or s.topup_minor or not stopped_awaiting_topup(s):
        return t
    done = bill(s, now, policy)
    return Transition(done.session, (*t.commands, *done.commands), t.note)


def stop(s: Session, now: datetime, policy: Policy, reason: str) -> Transition:
    s = go(s, Trigger.CAP, stop_reason=reason, timer=(TimerKind.STOP, now + policy.stop_timeout))
    return Transition(s, (c.StopCharger(f"{s.id}:stop", s.id, s.evse, reason),))


def _reported_energy(s: Session, ev: e.ChargerStopped) -> int:
    if ev.session_energy_wh is not None:
        return ev.session_energy_wh
    return (ev.meter_wh or 0) - (s.metering.meter_start_wh or 0)


def unpaid_energy(s: Session, ev: e.ChargerStopped, now: datetime, policy: Policy) -> Transition:
    """Energy reported for a session that never billed it (an ambiguous start whose hold is
    being or was released, a CDR after the release): a debt, never dropped. A final session
    sends it upstream on its own; an open one carries it in its outcome."""
    if late_report(s):
        return late_stop(s, ev, now, policy)
    delivered = _reported_energy(s, ev)
    if delivered <= 0 or s.metering.billed_energy_wh > 0 or s.bill.unpaid_energy_wh:
        return Transition(s, note="stopped: nothing unbilled")
    # Priced as delivered at the start we know of (issue 26, item 12; ``late_stop`` alike):
    # its energy and fees, never time we did not see it charge.
    first = s.metering.readings[0].at if s.metering.readings else s.created_at
    readings = (Reading(first, 0, True), Reading(first, delivered, True))
    owed = priced(s, readings, policy).bill.price_minor
    if not s.final:
        why = f"{delivered} Wh delivered without a start: {owed} owed"
        return Transition(
            update(
                s,
                unpaid_energy_wh=delivered,
                unpaid_minor=owed,
                notes=note(s, why),
                discrepancies=(*s.discrepancies, why),
            )
        )
    why = f"{delivered} Wh delivered after the session ended unpaid: {owed} owed"
    s = update(
        s,
        unpaid_energy_wh=delivered,
        unpaid_minor=owed,
        owed_minor=s.bill.owed_minor + owed,
        notes=note(s, why),
        discrepancies=(*s.discrepancies, why),
    )
    payload = {**outcome_payload(s), "debt_only": True}
    message = c.Enqueue(f"{s.id}:unpaid", f"session:{s.id}", "session.outcome", payload)
    return Transition(s, (message,))


def late_report(s: Session) -> bool:
    """The charge was billed to its last trusted reading (no stop confirmation, a fault) and
    the charger's own stop report (its real stop, a late CDR) has not been heard yet."""
    m = s.metering
    if stopped_awaiting_topup(s):  # not billed yet: the stop report is the charge's end
        return False
    return m.billed_to is BilledTo.LAST_TRUSTED and m.stopped_at is None and bool(m.readings)


def late_stop(s: Session, ev: e.ChargerStopped, now: datetime, policy: Policy) -> Transition:
    """The charger's stop report after the bill was made: the bill stands (the capture may be
    out); what it says differently is a discrepancy, and energy beyond the billed reading is
    owed (priced as if delivered at that reading: no time is billed for the gap). A report that
    cannot be true is recorded and owes nothing."""
    m = s.metering
    delivered = _reported_energy(s, ev)
    billed = m.billed_energy_wh
    s = update(
        s,
        stopped_at=now,
        stop_meter_wh=ev.meter_wh,
        reported_energy_wh=ev.session_energy_wh,
        stop_reason=s.stop_reason or ev.reason,
    )
    last = m.billed_readings()[-1]
    why = implausible(
        energy_wh=delivered,
        last_energy_wh=last.energy_wh,
        elapsed=now - s.created_at,
        rated_power_w=policy.rated_power_w.get(s.evse),
        stop=True,
    )
    extra = delivered - billed
    if why is None and abs(extra) <= policy.energy_tolerance_wh:
        return Transition(s, note="late stop report agrees with the bill")
    said = f"late stop report: {delivered} Wh delivered, {billed} Wh billed (the last reading)"
    if why is not None:
        said = f"{said}; implausible ({why}): nothing owed"
    s = replace(s, discrepancies=(*s.discrepancies, said))
    if why is not None or extra <= 0:
        return Transition(s)
    full = (*m.billed_readings(), Reading(last.at, delivered, True))
    owed = max(
        0, chargeable(s, price_of(s, full, policy).minor) - chargeable(s, s.bill.price_minor)
    )
    s = update(
        s,
        unpaid_energy_wh=s.bill.unpaid_energy_wh + extra,
        unpaid_minor=s.bill.unpaid_minor + owed,
        notes=note(s, f"{extra} Wh reported after the bill was made: {owed} owed"),
    )
    if not s.final:  # the session's outcome carries it (``settlement.next_hold``)
        return Transition(s)
    s = update(s, owed_minor=s.bill.owed_minor + owed)
    payload = {**outcome_payload(s), "debt_only": True}
    return Transition(
        s, (c.Enqueue(f"{s.id}:late", f"session:{s.id}", "session.outcome", payload),)
    )


def late_reading(s: Session, ev: e.MeterValue) -> Transition:
    """A meter value after the bill was made on the last trusted reading: never billed here
    (the stop report decides, ``late_stop``), never lost: a discrepancy (bounded)."""
    start = s.metering.meter_start_wh or 0
    energy = ev.meter_wh - start
    billed = s.metering.billed_energy_wh
    if energy <= billed or len(s.discrepancies) >= KEPT:
        return Transition(s, note="late meter value: nothing beyond the bill")
    said = f"late meter value: {energy} Wh after the bill ({billed} Wh billed)"
    return Transition(replace(s, discrepancies=(*s.discrepancies, said)))
