"""attack-money (round 3), the engine alone: an adversarial review of issue 26's money fixes,
written by someone who did not write them. Each probe combines what the fixes were tested for
one at a time: validity tables, routes in 0- and 3-decimal currencies, corrections with
unconfirmed captures, partial captures, goodwill refunds and restarts, a person's resolution of a
debt, end-of-day evidence, refunds after a restart or to another card.

A probe that passes is a guard: the claim held. A probe that failed on main is a BREAK: it says
what broke, where, and how it was fixed (or stays a strict xfail while open). The shared
sessions and builders are in tests/attack/round3_rig.py; the host, store and runtime probes in
test_attack_round3_money_host.py, further combinations in test_attack_round3_money_more.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.preauth import HoldPolicy, Target
from gateway.payments.record import from_json, to_json
from gateway.payments.schemes import Validity
from gateway.payments.session import HoldStatus, State
from gateway.payments.tariff import Dimension, PriceComponent, Tariff, TariffElement
from tests.attack.round3_rig import (
    MC,
    P_TOPUP,
    SID,
    VISA,
    capturing,
    completed,
    correction,
    enqueued,
    evidence,
    partly_captured,
    refunds_sent,
    two_holds,
    unconfirmed,
    unexplained,
)
from tests.payments.fixtures import T0, at, policy, step
from tests.payments.fixtures import terminal_result as res

# ---- item 1: a terminal's validity table wins, its default included ----------------------------


@pytest.mark.parametrize("card", [MC, VISA], ids=["mastercard", "visa"])
def test_a_terminal_table_with_only_a_default_bounds_every_scheme(card: dict[str, str]) -> None:
    """A 48 h acquirer: the terminal's table has only a default. Neither the site's 30 days
    (Mastercard) nor its 5 days (Visa) may outlive it, and the capture retries give up in time."""
    pol = policy(validity=Validity(terminals={"T1": {"default": timedelta(hours=48)}}))
    s = capturing(pol, card)
    s = at(s, res("capture", Outcome.DECLINED, None, None, for_ref="7"), 61, pol)
    assert s.expires_at == T0 + timedelta(hours=48)
    s = at(s, e.OpenPreauthsReported(SID, "q", ("7",)), 62, pol)
    assert s.state is State.CAPTURE_RETRY
    # the retries stop an hour before the 48 h hold lapses, never 29 days on
    late = 47 * 60 + 30
    s = at(s, e.TimerFired(SID, "retry", e.TimerKind.RETRY), late, pol)
    s = at(s, res("capture", Outcome.DECLINED, None, None, for_ref="7"), late, pol)
    s = at(s, e.OpenPreauthsReported(SID, "q2", ("7",)), late, pol)
    assert s.state is State.CAPTURE_FAILED and s.bill.owed_minor == 655


def test_a_terminal_table_for_one_scheme_leaves_the_others_to_its_default_not_the_sites() -> None:
    pol = policy(
        validity=Validity(
            terminals={"T1": {"visa": timedelta(days=3), "default": timedelta(hours=48)}}
        )
    )
    assert pol.validity.for_card("T1", MC) == ("mastercard", timedelta(hours=48))
    assert pol.validity.for_card("T1", VISA) == ("visa", timedelta(days=3))
    assert pol.validity.for_card("T2", MC) == ("mastercard", timedelta(days=30))


# ---- item 2 and routes: never a hold a session cannot price; 0- and 3-decimal currencies --------


def _tariff(tid: str, currency: str, per_kwh: str) -> Tariff:
    return Tariff(
        tid, currency, (TariffElement((PriceComponent(Dimension.ENERGY, Decimal(per_kwh)),)),)
    )


def test_a_chf_terminal_with_a_eur_tariff_makes_no_hold_and_tells_why() -> None:
    t = step(None, e.CardPresented(SID, "card", "E1", "T1", "CHF"), 0)
    assert t.session is not None and t.session.state is State.FAILED
    assert not [x for x in t.commands if isinstance(x, c.Preauthorize)]
    assert "EUR" in t.session.notes[-1] and "CHF" in t.session.notes[-1]


@pytest.mark.parametrize(
    ("currency", "per_kwh", "hold", "price"),
    [("JPY", "55", 20_000, 550), ("KWD", "0.125", 20_000, 1250)],
    ids=["jpy-exponent-0", "kwd-exponent-3"],
)
def test_a_route_in_a_0_or_3_decimal_currency_is_priced_and_captured_in_its_minor_units(
    currency: str, per_kwh: str, hold: int, price: int
) -> None:
    route_hold = HoldPolicy(
        strategy="fixed", fixed_minor={currency: hold}, min_minor=100, max_minor=50_000
    )
    pol = policy(
        route_holds={"r": route_hold},
        route_tariffs={"r": _tariff(f"{currency}-T", currency, per_kwh)},
    )
    card = e.CardPresented(SID, "card", "E1", "T9", currency, route="r")
    t = step(None, card, 0, pol)
    (pre,) = [x for x in t.commands if isinstance(x, c.Preauthorize)]
    assert (pre.amount_minor, pre.currency) == (hold, currency)
    s = at(t.session, res("preauthorize", Outcome.APPROVED, hold, 7, card=MC), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, pol)
    t = step(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=10_000), 60, pol)
    (cap,) = [x for x in t.commands if isinstance(x, c.Capture)]
    assert (cap.amount_minor, cap.currency) == (price, currency)


# ---- items 6-9: corrections combined with what they were not tested with ------------------------


def test_a_correction_while_the_capture_is_unconfirmed_refunds_what_the_evidence_shows_above_it() -> (
    None
):
    """The CPO corrects 6.55 to 5.00 while our capture is unconfirmed; the end of day then
    proves the 6.55 was captured: 1.55 must go back to the driver (or be a visible record)."""
    s = at(unconfirmed(), correction(500), 100)
    t = step(s, evidence(True), 600)
    assert t.session is not None and t.session.state is State.COMPLETED
    assert [x.amount_minor for x in refunds_sent(t)] == [155]
    assert refunds_sent(t)[0].method == "refund"  # that end of day closed the capture's batch
    assert t.session.bill.owed_minor == 0


def test_a_correction_while_the_capture_is_unconfirmed_is_the_debt_when_nothing_was_captured() -> (
    None
):
    s = at(unconfirmed(), correction(500), 100)
    assert s.bill.owed_minor == 500
    t = step(s, evidence(False), 600)
    assert t.session is not None and t.session.state is State.CAPTURE_FAILED
    assert t.session.bill.owed_minor == 500  # the corrected total, not the first price


def test_a_correction_below_a_partial_capture_refunds_what_was_taken_above_it() -> None:
    """Hold 7 captured 15.00, hold 8's 2.26 lapsed uncaptured (capture_failed, PARTIAL_SUCCESS).
    The CPO corrects the total to 10.00: 5.00 was taken above the price and must go back."""
    t = step(partly_captured(), correction(1000), 100, P_TOPUP)
    assert t.session is not None and t.session.bill.owed_minor == 0
    assert [x.amount_minor for x in refunds_sent(t)] == [500]


def test_a_correction_below_what_a_goodwill_refund_left_refunds_only_what_is_left() -> None:
    s = completed()
    s = at(s, e.RefundRequested(session_id=SID, event_id="g", amount_minor=600, reason="x"), 70)
    s = at(s, res("refund", Outcome.APPROVED, 600, 9), 71)
    t = step(s, correction(20), 90)  # 55 left captured, 35 above the correction
    assert [x.amount_minor for x in refunds_sent(t)] == [35]
    assert t.session is not None and t.session.bill.owed_minor == 0


@pytest.mark.parametrize("total", [-100, -1])
def test_a_negative_correction_moves_no_money_and_makes_no_debt(total: int) -> None:
    t = step(completed(), correction(total), 90)
    assert refunds_sent(t) == []
    s = t.session
    assert s is not None and s.refundable_minor == 655 and s.bill.owed_minor == 0
    # refused and recorded, never taken as the price (reconciliation would owe the driver more
    # than was ever captured)
    assert s.bill.corrected_minor is None and any("below zero" in d for d in s.discrepancies)


def test_a_correction_to_zero_of_a_two_hold_session_refunds_both_bookings_by_amount() -> None:
    s = two_holds(30_000)
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("capture", Outcome.APPROVED, 226, 31, for_ref="8"), 62, P_TOPUP)
    assert s.state is State.COMPLETED and s.captured_minor == 1726
    t = step(s, correction(0), 90, P_TOPUP)
    (refund,) = refunds_sent(t)
    # two bookings: a reversal of one receipt cannot give both back
    assert refund.method == "refund" and refund.amount_minor == 1726


def test_two_corrections_racing_a_refund_leave_the_debt_of_the_last_one() -> None:
    s = at(completed(), correction(500, n=2), 90)  # 155 refund out
    s = at(s, correction(600, n=3), 91)  # higher, while the refund is in flight
    t = step(s, res("refund", Outcome.APPROVED, 155, 9), 92)
    assert refunds_sent(t) == []
    assert t.session is not None and t.session.refundable_minor == 500
    assert t.session.bill.owed_minor == 100  # paid 5.00 for a corrected 6.00


def test_a_correction_waiting_for_a_refund_survives_a_restart() -> None:
    s = at(
        completed(),
        e.RefundRequested(session_id=SID, event_id="g", amount_minor=55, reason="x"),
        70,
    )
    s = from_json(to_json(at(s, correction(300), 71)))
    assert s.bill.correction_waiting
    t = step(s, res("refund", Outcome.APPROVED, 55, 9), 72)
    assert [x.amount_minor for x in refunds_sent(t)] == [300]


def test_a_correction_of_a_spare_hold_session_refunds_from_the_capture_only() -> None:
    """Item 3 with a correction: captured from hold 7, hold 8 lapsed unreleased (nothing taken
    from it). A correction refunds only what was captured above it."""
    s = two_holds(22_000)
    s = at(s, res("capture", Outcome.APPROVED, 1297, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("release", Outcome.UNKNOWN, None, None, for_ref="8"), 62, P_TOPUP)
    s = replace(s, expires_at=T0 + timedelta(minutes=90))
    s = at(s, e.OpenPreauthsReported(SID, "q", (), failed=True), 63, P_TOPUP)
    assert s.state is State.COMPLETED and s.holds[1].status is HoldStatus.LAPSED
    t = step(from_json(to_json(s)), correction(1000), 90, P_TOPUP)
    (refund,) = refunds_sent(t)
    assert refund.amount_minor == 297 and refund.method == "refund"  # part of it: 06 31


# ---- --resolve: a person settles a debt ---------------------------------------------------------


def _resolve(n: int = 1, part: str = "owed") -> e.DebtResolved:
    return e.DebtResolved(session_id=SID, event_id=f"resolve-{n}", reason="paid in cash", part=part)


def test_resolving_a_session_that_owes_nothing_changes_nothing() -> None:
    s = completed()
    t = step(s, _resolve(), 90)
    assert t.session == s and t.commands == ()


def test_resolving_twice_never_takes_the_debt_below_zero() -> None:
    s = at(partly_captured(), _resolve(1), 90, P_TOPUP)
    assert s.bill.owed_minor == 0
    t = step(s, _resolve(2), 91, P_TOPUP)
    assert t.session == s


def test_resolving_an_open_session_changes_nothing() -> None:
    s = capturing()
    assert step(s, _resolve(), 61).session == s


def test_a_resolved_unconfirmed_debt_does_not_come_back_with_the_end_of_day() -> None:
    """A person settled the unconfirmed capture's debt (``--resolve capture_unconfirmed:ID``,
    paid in cash); the end of day then shows no capture: the debt is not owed a second time."""
    s = at(unconfirmed(), _resolve(), 100)
    assert s.bill.owed_minor == 0
    t = step(s, evidence(False), 600)
    assert t.session is not None and t.session.bill.owed_minor == 0


# ---- item 5 and the evidence: unconfirmed captures --------------------------------------------


def test_the_end_of_day_confirming_a_capped_capture_owes_nothing_above_the_drivers_amount() -> None:
    """Item 11 with an unconfirmed capture: the driver declared 20.00, the late stop priced
    20.47, 20.00 was asked. The end of day confirms the capture: nothing more is owed."""
    pol = policy("target")
    card = e.CardPresented(SID, "card", "E1", "T1", "EUR", target=Target(amount_minor=2000))
    s = at(None, card, 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 2200, 7, card=MC), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, pol)
    s = at(s, e.MeterValue(SID, "m", 35_000), 60, pol)
    s = at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=36_000), 61, pol)
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 62, pol)
    s = at(s, e.OpenPreauthsReported(SID, "q", ()), 63, pol)
    assert s.state is State.CAPTURE_UNCONFIRMED and s.bill.owed_minor == 2000
    t = step(s, evidence(True), 600, pol)
    assert t.session is not None and t.session.state is State.COMPLETED
    assert t.session.bill.owed_minor == 0


def test_the_end_of_day_keeps_the_booking_time_of_an_earlier_captured_hold() -> None:
    """Item 4 with the evidence: hold 7 captured at 61, hold 8's capture unconfirmed. The end
    of day confirms hold 8: the session stays booked at its first capture (reconciliation
    counts hold 7 in the batch it is in), never moved to the later one."""
    s = two_holds(30_000)
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("capture", Outcome.DECLINED, None, None, for_ref="8"), 62, P_TOPUP)
    s = at(s, e.OpenPreauthsReported(SID, "q", ("8",)), 63, P_TOPUP)
    assert s.state is State.CAPTURE_RETRY  # hold 8 still open: its capture is tried later
    s = at(s, e.TimerFired(SID, "retry", e.TimerKind.RETRY), 62 * 60, P_TOPUP)
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="8"), 62 * 60, P_TOPUP)
    s = at(s, e.OpenPreauthsReported(SID, "q2", ()), 62 * 60 + 1, P_TOPUP)
    assert s.state is State.CAPTURE_UNCONFIRMED and s.captured_minor == 1500
    assert not enqueued(step(s, e.Resumed(SID, "r"), 62 * 60 + 2, P_TOPUP))
    t = step(s, evidence(True), 63 * 60, P_TOPUP)
    assert t.session is not None and t.session.captured_minor == 1726
    assert t.session.bill.captured_at == T0 + timedelta(minutes=61)


def test_a_stored_capture_approval_survives_a_restart_and_decides_the_enquiry() -> None:
    s = at(
        capturing(), res("capture", Outcome.APPROVED, 655, 12, for_ref="7", provisional=True), 61
    )
    s = from_json(to_json(s))  # the process dies here; the step was stored
    assert s.held_result is not None
    t = step(s, e.Resumed(SID, "resume"), 70)
    (query,) = t.commands
    assert isinstance(query, c.QueryOpenPreauths)
    done = at(t.session, e.OpenPreauthsReported(SID, "q", ()), 71)
    assert done.state is State.COMPLETED and done.captured_minor == 655
    assert done.holds[0].booking_ref == "12"


def test_a_stored_approval_of_another_amount_is_no_evidence() -> None:
    """A provisional approval of an amount that is neither what we asked nor its rest."""
    s = at(
        capturing(), res("capture", Outcome.APPROVED, 999, 12, for_ref="7", provisional=True), 61
    )
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 61)
    done = at(s, e.OpenPreauthsReported(SID, "q", ()), 62)
    assert done.state is State.CAPTURE_UNCONFIRMED and done.captured_minor == 0


def test_no_failed_outcome_for_a_partly_unconfirmed_session() -> None:
    s = two_holds(30_000)
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="8"), 62, P_TOPUP)
    t = step(s, e.OpenPreauthsReported(SID, "q", ()), 63, P_TOPUP)
    assert t.session is not None and t.session.state is State.CAPTURE_UNCONFIRMED
    assert enqueued(t) == []  # held until the evidence decides


# ---- refunds: a restart, another card --------------------------------------------------------


@pytest.mark.parametrize("provisional", [False, True], ids=["answer-lost", "approval-stored"])
def test_a_refund_whose_answer_died_with_the_process_is_listed_by_reconciliation(
    provisional: bool,
) -> None:
    """Restart between a refund's approval and its storage (or after its approval was stored
    but before it was acknowledged): the refund stays ``sent``. The session is final, so no
    resume asks about it: reconciliation must list it, or nobody ever will."""
    s = at(
        completed(),
        e.RefundRequested(session_id=SID, event_id="g", amount_minor=655, reason="x"),
        70,
    )
    if provisional:
        s = at(s, res("reversal", Outcome.APPROVED, 655, 9, provisional=True), 71)
    s = from_json(to_json(s))
    s = at(s, e.Resumed(SID, "resume"), 80)  # what a restart tells the session, if anything
    kinds = [f.kind for f in unexplained(s, 80, timedelta(days=1))]
    assert "refund_unsettled" in kinds


def test_a_card_present_refund_paid_to_another_card_is_not_the_drivers_refund() -> None:
    """06 31 gives money to whatever card is presented: the terminal's answer names the card.
    A refund to another card than the session's is a discrepancy, never the driver's refund
    told to the CPO."""
    s = completed(card=MC)
    ask = e.RefundRequested(
        session_id=SID, event_id="g", amount_minor=100, reason="x", day_closed=True
    )
    s = at(s, ask, 70)
    t = step(s, res("refund", Outcome.APPROVED, 100, 9, card=VISA), 71)
    assert t.session is not None
    assert any("another card" in d for d in t.session.discrepancies)
    assert enqueued(t, "session.refund") == []
    assert t.session.refunded_minor == 0 and t.session.refundable_minor == 655
    assert t.session.id == SID and t.session.created_at == T0
    found = [(f.kind, f.amount_minor) for f in unexplained(t.session, 71, timedelta(days=1))]
    assert ("refund_other_card", 100) in found


def test_a_card_present_refund_to_the_same_card_is_done() -> None:
    s = completed(card=MC)
    ask = e.RefundRequested(
        session_id=SID, event_id="g", amount_minor=100, reason="x", day_closed=True
    )
    s = at(s, ask, 70)
    t = step(s, res("refund", Outcome.APPROVED, 100, 9, card=MC), 71)
    assert t.session is not None and t.session.refunded_minor == 100
    assert len(enqueued(t, "session.refund")) == 1
