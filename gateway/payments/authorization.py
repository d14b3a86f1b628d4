"""Pre-authorisation: the hold asked for at the card, what its result means, and how a lost
result is resolved — a hold is adopted only on the terminal's evidence that it is ours (never
by order of arrival) and then given back; an approval without a hold reference is no approval.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import ROUND_CEILING, Decimal

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.capture import chargeable, release_all
from gateway.payments.events import TimerKind
from gateway.payments.lost_settlement import cancel_by_reference
from gateway.payments.model import Hold, Session, authorization_reference, sale_reference
from gateway.payments.moves import Transition, finish, go, note, query
from gateway.payments.policy import Policy
from gateway.payments.preauth import initial_hold
from gateway.payments.settlement import settle_command
from gateway.payments.states import State, Trigger, next_state
from gateway.payments.strategy_choice import choose_strategy
from gateway.payments.tariff import Tariff


def start(ev: e.CardPresented, now: datetime, policy: Policy) -> Transition:
    routed = ev.route is not None
    tariff = (policy.route_tariffs.get(ev.route) if ev.route else None) or policy.tariff(ev.evse)
    # the strategy the terminal can carry out, read from its capabilities as the session starts
    caps = policy.capabilities_of(ev.terminal)
    choice = choose_strategy(policy.hold_of(ev.route), caps, ev.terminal)
    hold = initial_hold(choice.hold, ev.currency, tariff, ev.target, now, policy.tz)
    notes: tuple[str, ...] = (
        (f"route {ev.route}: terminal {ev.terminal}, {ev.currency}",) if routed else ()
    )
    notes = (*notes, *choice.notes)
    why = _cannot_price(ev, tariff, policy)
    cap = policy.free_vend_wh.get(ev.evse) if tariff is None else None
    if cap is not None:
        notes = (*notes, f"free vend at EVSE {ev.evse}: nothing billed, at most {cap} Wh")
    s = Session(
        ev.session_id,
        ev.evse,
        ev.terminal,
        ev.currency,
        next_state(None, Trigger.UNPRICEABLE if why else Trigger.CARD),
        now,
        hold_minor=0 if why else hold,
        target_amount_minor=ev.target.amount_minor if ev.target else None,
        target_energy_wh=_wh(ev.target.kwh) if ev.target and ev.target.kwh is not None else None,
        tariff_id=tariff.id if tariff else None,
        route=ev.route,
        notes=(*notes, why) if why else notes,
        timer=None if why else (TimerKind.ANSWER, now + policy.answer_timeout),
    )
    if why:  # never a hold the session could not price: it would stay open until it lapsed
        return finish(s)
    cmd = c.Preauthorize(
        key=f"{s.id}:preauth",
        session_id=s.id,
        terminal=s.terminal,
        amount_minor=hold,
        currency=s.currency,
        reference=sale_reference(s.id),
    )
    return Transition(s, (cmd,))


def _wh(kwh: Decimal) -> int:
    return int((kwh * 1000).to_integral_value(ROUND_CEILING))


def _cannot_price(ev: e.CardPresented, tariff: Tariff | None, policy: Policy) -> str:
    """Why a session at this EVSE could not be priced, or "" when it can."""
    if tariff is None and ev.evse not in policy.free_vend_wh:
        return f"EVSE {ev.evse} has no tariff and no free vend: no hold made"
    if tariff is not None and tariff.currency != ev.currency:
        return (
            f"tariff {tariff.id} is in {tariff.currency}, terminal {ev.terminal} charges in "
            f"{ev.currency}: no hold made"
        )
    return ""


def orphan(ev: e.OrphanFound, now: datetime, policy: Policy) -> Transition:
    """A hold open at the terminal that no session owns (its result was lost and no session
    could attribute it by its data): release it. Its amount is unknown here, so it is booked 0."""
    s = Session(
        ev.session_id,
        "-",
        ev.terminal,
        ev.currency,
        next_state(None, Trigger.ORPHAN),
        now,
        holds=(Hold(ev.ref, 0, target_minor=0),),
        expires_at=now + policy.validity.default,
        notes=("orphan hold found by the terminal sweep",),
    )
    return settle_command(s, now, policy)


def preauth_result(
    s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy
) -> Transition:
    if s.state is State.AUTHORIZING:
        return _answered(s, ev, now, policy)
    if s.state is State.AUTH_UNKNOWN and ev.outcome is Outcome.APPROVED and ev.ref is not None:
        # Our hold exists after all, but the charger was never authorised: give it back.
        amount = ev.amount_minor or s.hold_minor
        s = go(
            s,
            Trigger.LATE_APPROVAL,
            holds=(Hold(ev.ref, amount, ev.trace_no, target_minor=0),),
            card=dict(ev.card),
            notes=note(s, "late approval released"),
        )
        return settle_command(s, now, policy)
    return Transition(s, note=f"pre-auth result in {s.state}: ignored")


def _answered(s: Session, ev: e.TerminalResultArrived, now: datetime, policy: Policy) -> Transition:
    if ev.outcome is Outcome.APPROVED and ev.ref is None:
        # Without its reference the hold could never be captured or released: not an approval.
        s = go(
            s,
            Trigger.LOST,
            notes=note(s, "approval without a hold reference: asking the terminal"),
        )
        return query(s, now, policy)
    if ev.outcome is Outcome.APPROVED:
        assert ev.ref is not None  # noqa: S101 - narrowed above
        approved = ev.amount_minor if ev.amount_minor is not None else s.hold_minor
        scheme, validity = policy.validity.for_card(s.terminal, ev.card)
        # Counted from when the hold was asked for (the terminal made it no earlier), never from
        # when its answer arrived: an answer heard late (a stall, a restart) must not make us
        # believe in a hold the issuer has already let go (simulation seed 1668930904).
        s = replace(
            s,
            holds=(Hold(ev.ref, approved, ev.trace_no),),
            card=dict(ev.card),
            scheme=scheme,
            reference=authorization_reference(s.id),
            expires_at=s.created_at + validity,
        )
        if approved < min(policy.min_partial(s.route), s.hold_minor):
            s = go(
                s,
                Trigger.APPROVED_LOW,
                notes=note(s, f"partial approval {approved} below minimum"),
            )
            return settle_command(release_all(s), now, policy)
        s = go(s, Trigger.APPROVED, timer=(TimerKind.START, now + policy.start_timeout))
        return Transition(s, (authorize(s, policy),))
    if ev.outcome is Outcome.UNKNOWN:
        return query(go(s, Trigger.LOST), now, policy)
    trigger = (
        Trigger.DECLINED if ev.outcome in (Outcome.DECLINED, Outcome.ABORTED) else Trigger.REFUSED
    )
    return finish(go(s, trigger, notes=note(s, f"{ev.outcome}: {ev.message}")))


def adopt(
    s: Session, ev: e.OpenPreauthsReported, now: datetime, policy: Policy, held: e.LastResult | None
) -> Transition:
    """A pre-auth whose result was lost: adopt an open hold only when the terminal's result shows
    it and its amount fits ours — never by order of arrival; then give it back. Our own result,
    stored before the crash (``held``), is the better evidence: its hold is ours if it is still
    open, and gone if the terminal reversed it for want of our acknowledgement."""
    last = held or ev.last
    if held is not None and held.ref not in ev.refs:
        why = (
            f"our pre-auth {held.ref} was reversed by the terminal (our acknowledgement "
            f"never reached it)"
        )
        return finish(go(s, Trigger.NO_HOLD, notes=note(s, why)))
    if (
        last is not None
        and last.approved
        and last.ref in ev.orphans
        and last.amount_minor is not None
        and 0 < last.amount_minor <= s.hold_minor
    ):
        assert last.ref is not None  # noqa: S101 - it is in the orphans
        s = go(
            s,
            Trigger.ADOPTED,
            holds=(Hold(last.ref, last.amount_minor, target_minor=0),),
            expires_at=now + policy.validity.default,
            notes=note(s, "our lost pre-auth found open: released"),
        )
        return settle_command(s, now, policy)
    if s.terminal in policy.online_deadlines:
        # The POI's ledger cannot show a hold made while we were away (its answer never stored):
        # on a terminal whose modifications go online it is cancelled at the acquirer by the
        # reference we gave the POI, never left without an owner (issue 29, the crash campaign).
        return cancel_by_reference(s, now, policy)
    why = "no pre-authorisation was made"
    if ev.orphans:
        why = f"open holds {list(ev.orphans)} not attributable to this session: released as orphans"
    return finish(go(s, Trigger.NO_HOLD, notes=note(s, why)))


def authorize(s: Session, policy: Policy, repeat: bool = False) -> c.AuthorizeCharger:
    """Start charging, under the hold (or the driver's declared amount) less the safety margin,
    before the start timer ends; ``repeat``: the same again after a restart (the charger link
    decides whether it can)."""
    start_by = s.timer[1] if s.timer is not None and s.timer[0] is TimerKind.START else None
    return c.AuthorizeCharger(
        key=f"{s.id}:authorize",
        session_id=s.id,
        evse=s.evse,
        max_cost_minor=max(0, chargeable(s, s.authorized_minor) - policy.safety_margin(s.route)),
        currency=s.currency,
        start_by=start_by,
        repeat=repeat,
    )
