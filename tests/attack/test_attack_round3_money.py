"""attack-money: an adversarial review of issue 26's money fixes (round 3), written by someone who
did not write them. Each probe combines what the fixes were tested for one at a time: two holds,
corrections, restarts, unconfirmed captures, end-of-day evidence, refunds, routes in 0- and
3-decimal currencies, validity tables, a person's resolution of a debt.

A probe that passes is a guard: the claim held. A probe that failed on main is a BREAK: it says
what broke, where, and how it was fixed (or stays a strict xfail while open).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from drivers.base import BrandTotal, Outcome, TerminalResult
from drivers.money import Money
from drivers.sim.terminal import SimConfig
from gateway.cli.reconcile_cmd import load_facts
from gateway.errors import ConfigError
from gateway.ocpi.charger import OcpiChargerLink
from gateway.ocpi.models import Cdr
from gateway.ocpi.worker import UpstreamWorker
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.charger import (
    ChargerEvent,
    ChargeStopped,
    PaymentRequested,
    PriceCorrection,
)
from gateway.payments.preauth import HoldPolicy, Target
from gateway.payments.reconcile import BatchFacts, Facts, Finding, reconcile, session_facts
from gateway.payments.record import from_json, to_json
from gateway.payments.schemes import Validity
from gateway.payments.session import HoldStatus, Policy, Session, State, Transition
from gateway.payments.tariff import Dimension, PriceComponent, Tariff, TariffElement
from gateway.runtime.charger import SimulatedCharger
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_setup import build_engine, build_policy
from gateway.settings import SecretRef, UpstreamSettings, parse_settings
from gateway.store import InboxMessage, SessionRecord, Step, Store
from tests.payments.fixtures import T0, Clock, at, policy, step
from tests.payments.fixtures import terminal_result as res
from tests.runtime.runner_rig import runner_rig
from tests.site_rig import route_site

SID = "s1"
MC = {"brand": "MasterCard", "aid": "A0000000041010", "masked_pan": "541333******0074"}
VISA = {"brand": "VISA", "aid": "A0000000031010", "masked_pan": "400000******0002"}
P = policy()
P_TOPUP = policy("incremental", topup_terminals=frozenset({"T1"}))


def unexplained(
    s: Session, minutes: float, judged: timedelta, batches: tuple[BatchFacts, ...] = ()
) -> tuple[Finding, ...]:
    """What reconciliation leaves unexplained of ``s`` alone, its row last written ``minutes``
    after T0, over the day from T0, judged ``judged`` after T0 (with ``batches``)."""
    row = {
        "id": s.id,
        "state": s.state.value,
        "data": to_json(s),
        "created_at": s.created_at,
        "updated_at": T0 + timedelta(minutes=minutes),
    }
    facts = Facts(T0, T0 + timedelta(days=1), T0 + judged, [session_facts(row)], batches)
    return reconcile(facts).unexplained


def enqueued(t: Transition, kind: str = "session.outcome") -> list[c.Enqueue]:
    return [x for x in t.commands if isinstance(x, c.Enqueue) and x.kind == kind]


def refunds_sent(t: Transition) -> list[c.RefundPayment]:
    return [x for x in t.commands if isinstance(x, c.RefundPayment)]


def capturing(
    pol: Policy = P, card: dict[str, str] | None = None, stop_wh: int = 11_000
) -> Session:
    """10 kWh at the fixtures' tariff: 6.55 EUR to capture from a hold of 50.00 (receipt 7)."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7, card=card or MC), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    s = at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=stop_wh), 60, pol)
    assert s.state is State.CAPTURING
    return s


def completed(pol: Policy = P, card: dict[str, str] | None = None) -> Session:
    s = at(capturing(pol, card), res("capture", Outcome.APPROVED, 655, 8, for_ref="7"), 61, pol)
    assert s.state is State.COMPLETED and s.captured_minor == 655
    return s


def unconfirmed(pol: Policy = P) -> Session:
    """The capture's answer lost, the hold gone, no evidence: capture_unconfirmed, 6.55 owed."""
    s = at(capturing(pol), res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 61, pol)
    s = at(s, e.OpenPreauthsReported(SID, "q", ()), 62, pol)
    assert s.state is State.CAPTURE_UNCONFIRMED and s.bill.owed_minor == 655
    return s


def evidence(captured: bool, n: int = 1) -> e.CaptureEvidence:
    return e.CaptureEvidence(
        session_id=SID, event_id=f"eod-{n}", captured=captured, evidence="end-of-day totals"
    )


def correction(total: int, n: int = 2, currency: str | None = None) -> e.PriceCorrected:
    return e.PriceCorrected(
        session_id=SID,
        event_id=f"price-corrected-CDR-{n}",
        total_minor=total,
        reason=f"corrected CDR {n}",
        currency=currency,
    )


def two_holds(stop_wh: int) -> Session:
    """An incremental session: hold 7 (15.00), a top-up as a new hold 8 (15.00), stopped."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, P_TOPUP)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, card=MC), 0, P_TOPUP)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, P_TOPUP)
    s = at(s, e.MeterValue(SID, "m", 21_000), 30, P_TOPUP)
    s = at(s, res("topup", Outcome.APPROVED, 1500, 8, for_ref="7"), 31, P_TOPUP)
    assert [h.ref for h in s.holds] == ["7", "8"]
    return at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=stop_wh), 60, P_TOPUP)


def partly_captured() -> Session:
    """17.26 priced: hold 7 captured (15.00), hold 8's capture (2.26) declined until it lapsed."""
    s = two_holds(30_000)
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("capture", Outcome.DECLINED, None, None, for_ref="8"), 62, P_TOPUP)
    s = replace(s, expires_at=T0 + timedelta(minutes=90))
    s = at(s, e.OpenPreauthsReported(SID, "q", ("8",)), 63, P_TOPUP)
    assert s.state is State.CAPTURE_FAILED and (s.captured_minor, s.bill.owed_minor) == (1500, 226)
    return s


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


# ---- the host and the store: end-of-day evidence --------------------------------------------


def _host(tmp_path: Path, pol: Policy = P) -> tuple[EngineHost, Clock, Store]:
    clock = Clock(datetime.now(UTC) - timedelta(hours=3))
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    return EngineHost(store, pol, clock), clock, store


def _charge(host: EngineHost, clock: Clock, sid: str, receipt: int, capture: Outcome) -> Session:
    """2 kWh (2.26 EUR) on a Mastercard at T1; the capture answered with ``capture``."""
    for ev in (
        e.CardPresented(sid, "card", "E1", "T1", "EUR"),
        res("preauthorize", Outcome.APPROVED, 5000, receipt, sid=sid, card=MC),
        e.ChargerStarted(sid, "st", 1000),
        e.ChargerStopped(session_id=sid, event_id="sp", meter_wh=3000),
        res(
            "capture",
            capture,
            None if capture is Outcome.UNKNOWN else 226,
            receipt + 1,
            sid=sid,
            for_ref=str(receipt),
        ),
    ):
        host.handle(ev)
        clock.advance(60)
    if capture is Outcome.UNKNOWN:
        host.handle(e.OpenPreauthsReported(sid, "q", ()))
        clock.advance(60)
    s = host.load(sid)
    assert s is not None
    return s


def _eod(host: EngineHost, count: int, amount: int, currency: str = "EUR") -> None:
    batch = TerminalResult(
        "end_of_day",
        Outcome.APPROVED,
        totals=(BrandTotal("mastercard", count, amount, currency),),
        batch_range=("1", "99"),
    )
    host.record_end_of_day("T1", batch, currency)


def test_a_refund_of_unknown_fate_in_the_batch_leaves_the_evidence_undecided(
    tmp_path: Path,
) -> None:
    """s1 captured 2.26 and its reversal's answer was lost; s2's capture of 2.26 is
    unconfirmed. The terminal counts 1 for 2.26: either the reversal failed and s2 was not
    captured, or the reversal stood and s2 was. The totals cannot tell: undecided."""
    host, clock, store = _host(tmp_path)
    try:
        s1 = _charge(host, clock, "s1", 10, Outcome.APPROVED)
        assert s1.state is State.COMPLETED
        refund = e.RefundRequested(session_id="s1", event_id="g", amount_minor=226, reason="x")
        host.handle(refund)
        clock.advance(60)
        lost = e.TerminalResultArrived(
            session_id="s1", event_id="rl", operation=e.Operation.REVERSAL, outcome=Outcome.UNKNOWN
        )
        host.handle(lost)
        clock.advance(60)
        s2 = _charge(host, clock, "s2", 20, Outcome.UNKNOWN)
        assert s2.state is State.CAPTURE_UNCONFIRMED
        _eod(host, 1, 226)
        after = host.load("s2")
        assert after is not None and after.state is State.CAPTURE_UNCONFIRMED
    finally:
        store.close()


def test_totals_in_another_currency_decide_nothing_about_a_eur_capture(tmp_path: Path) -> None:
    host, clock, store = _host(tmp_path)
    try:
        _charge(host, clock, "s2", 20, Outcome.UNKNOWN)
        _eod(host, 1, 226, currency="JPY")
        s2 = host.load("s2")
        assert s2 is not None and s2.state is State.CAPTURE_UNCONFIRMED
    finally:
        store.close()


def test_two_unconfirmed_captures_of_one_amount_with_another_paid_one_stay_undecided(
    tmp_path: Path,
) -> None:
    """Two lost captures of 2.26 and one paid 2.26: the terminal counts 2 for 4.52. Either lost
    one could be the second booking: undecided, both."""
    host, clock, store = _host(tmp_path)
    try:
        _charge(host, clock, "s1", 10, Outcome.APPROVED)
        _charge(host, clock, "s2", 20, Outcome.UNKNOWN)
        _charge(host, clock, "s3", 30, Outcome.UNKNOWN)
        _eod(host, 2, 452)
        for sid in ("s2", "s3"):
            s = host.load(sid)
            assert s is not None and s.state is State.CAPTURE_UNCONFIRMED
        assert store.outbox.list(kind="session.outcome", limit=10) != []  # s1's only
        assert {m.payload["session_id"] for m in store.outbox.list(kind="session.outcome")} == {
            "s1"
        }
    finally:
        store.close()


def test_a_capture_retrying_for_weeks_does_not_block_the_terminals_end_of_day(
    tmp_path: Path,
) -> None:
    """A hold still open after a declined capture waits (capture_retry) for its next try: no
    transaction of it is at the terminal, and the other payments' batch must close."""
    host, clock, store = _host(tmp_path)
    try:
        _charge(host, clock, "s1", 10, Outcome.APPROVED)
        _charge(host, clock, "s2", 20, Outcome.DECLINED)
        host.handle(e.OpenPreauthsReported("s2", "q", ("20",)))
        s2 = host.load("s2")
        assert s2 is not None and s2.state is State.CAPTURE_RETRY
        assert host.open_on_terminal("T1") is None
    finally:
        store.close()


# ---- the runtime: after a restart the last result is asked before any other money command -----


async def test_another_sessions_capture_waits_for_the_last_result_after_a_restart(
    tmp_path: Path,
) -> None:
    """The daemon dies after the terminal captured for s1, before the result was stored. The
    terminal was not reachable at the restart, so its last result is not asked yet when it is
    back; s2 (charging on E2 meanwhile) stops and its capture comes first. That capture must
    wait like a new pre-auth does, or it overwrites the evidence s1 is judged on."""
    config = SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0)
    async with runner_rig(tmp_path, config) as rig:
        async with asyncio.timeout(60):
            first, heard = rig.runner(register_timeout_s=0.2)
            await first.register()
            await rig.run(first, heard, e.CardPresented("s1", "card", "E1", "T1", "EUR"))
            await rig.run(first, heard, e.ChargerStarted("s1", "st", 1000))
            await rig.run(first, heard, e.CardPresented("s2", "card", "E2", "T1", "EUR"))
            await rig.run(first, heard, e.ChargerStarted("s2", "st", 1000))
            rig.clock.advance(60)  # s2 started before s1's capture was sent
            stop = e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=3000)
            (capture,) = [x for x in rig.host.handle(stop).commands if isinstance(x, c.Capture)]
            done = await rig.drivers[-1].capture(  # the terminal captures; the daemon dies unheard
                capture.ref,
                Money(capture.held_minor, "EUR"),
                Money(capture.amount_minor, "EUR"),
                capture.reference,
            )
            assert done.approved
            await rig.drivers[-1].close()
            rig.clock.advance(60)

            # the restart, the terminal unreachable then (not registered, not asked); back now
            second, heard = rig.runner(register_timeout_s=0.2)
            await rig.run(
                second, heard, e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=4000)
            )
            await second.ask_last_result()  # the probe finds it back and asks
            await rig.run(second, heard, e.Resumed("s1", "boot"))
        s1 = rig.host.load("s1")
        assert s1 is not None and s1.state is State.COMPLETED
        assert s1.holds[0].booking_ref == done.ref


# ---- more combinations ------------------------------------------------------------------------


def test_a_second_holds_capture_is_never_confirmed_by_the_first_holds_booking() -> None:
    """Two holds of 15.00, both to be captured in full. Hold 7's capture stood (booking 30);
    hold 8's capture answer is lost and hold 8 is gone. The terminal's last result is still
    hold 7's booking (30, 15.00): that is no evidence for hold 8."""
    s = two_holds(60_000)
    assert [h.target_minor for h in s.holds] == [1500, 1500]
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="8"), 62, P_TOPUP)
    last = e.LastResult(approved=True, ref="30", amount_minor=1500)
    s = at(s, e.OpenPreauthsReported(SID, "q", (), last=last), 63, P_TOPUP)
    assert s.holds[1].status is HoldStatus.UNCONFIRMED and s.captured_minor == 1500


def test_a_correction_below_a_partly_unconfirmed_capture_refunds_the_known_capture_above_it() -> (
    None
):
    """Hold 7 captured 15.00, hold 8's capture unconfirmed; the CPO corrects to 10.00. What is
    known to be taken above the correction (5.00) goes back now."""
    s = two_holds(30_000)
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="8"), 62, P_TOPUP)
    s = at(s, e.OpenPreauthsReported(SID, "q", ()), 63, P_TOPUP)
    assert s.state is State.CAPTURE_UNCONFIRMED
    t = step(s, correction(1000), 90, P_TOPUP)
    assert [x.amount_minor for x in refunds_sent(t)] == [500]
    assert t.session is not None and t.session.bill.owed_minor == 0


def test_a_correction_refund_the_terminal_refuses_stays_a_visible_debt_to_the_driver() -> None:
    """06 31 needs the driver's card at the terminal, long after they left: the correction's
    refund is refused. The 1.55 taken above the corrected price is money owed back to the
    driver: reconciliation must list it."""
    s = at(completed(), correction(500), 90)
    s = at(s, res("refund", Outcome.DECLINED, None, None), 91)
    found = [f for f in unexplained(s, 91, timedelta(days=2)) if f.sessions == (SID,)]
    assert any(f.amount_minor == 155 for f in found), found


def test_an_undecided_unconfirmed_capture_stays_listed_with_its_debt(tmp_path: Path) -> None:
    """The FAC of an unconfirmed capture is held; after an end of day that decides nothing the
    session is not forgotten: reconciliation lists it with what it owes."""
    host, clock, store = _host(tmp_path)
    try:
        _charge(host, clock, "s2", 20, Outcome.UNKNOWN)
        _charge(host, clock, "s3", 30, Outcome.UNKNOWN)
        _eod(host, 1, 226)
        clock.advance(7 * 24 * 3600)
        now = clock()
        facts = load_facts(store, now - timedelta(days=30), now, now, upstream=False)
    finally:
        store.close()
    listed = {
        f.sessions: f.amount_minor
        for f in reconcile(facts).unexplained
        if f.kind == "capture_unconfirmed"
    }
    assert listed == {("s2",): 226, ("s3",): 226}


SITE_PRICING = 'strategy = "fixed"\nsafety_margin = "0.50"\nmin_partial_approval = "5.00"\n'
KWD_SITE = route_site(
    "KWD",
    price="0.125",
    terminal="tk",
    route="kw",
    pricing=SITE_PRICING + 'fixed_hold = { EUR = "50.00", KWD = "15.000" }',
    route_keys='hold_min = "1.000"\nhold_max = "50.000"',
)


def test_a_route_in_a_3_decimal_currency_never_takes_the_sites_margin_as_its_minor_units() -> None:
    """The safety margin (0.50 EUR = 50 cents) and the minimum partial approval (5.00 EUR) are
    the site's: a KWD route must state its own (in fils), as it must its holds; never 50 fils."""
    with pytest.raises(ConfigError, match="safety_margin"):
        parse_settings(KWD_SITE, "<route>")
    own = KWD_SITE.replace(
        'hold_max = "50.000"\n',
        'hold_max = "50.000"\nsafety_margin = "0.150"\nmin_partial_approval = "1.500"\n',
    )
    pol = build_policy(parse_settings(own, "<route>"))
    s = at(None, e.CardPresented(SID, "card", "E1", "tk", "KWD", route="kw"), 0, pol)
    t = step(s, res("preauthorize", Outcome.APPROVED, 15_000, 7, card=MC), 0, pol)
    (auth,) = [x for x in t.commands if isinstance(x, c.AuthorizeCharger)]
    assert auth.max_cost_minor == 15_000 - 150
    low = step(s, res("preauthorize", Outcome.APPROVED, 1_000, 7, card=MC), 0, pol)
    assert low.session is not None and low.session.state is State.RELEASING  # below 1.500


def test_a_card_the_terminal_totals_in_another_group_is_never_decided_not_captured(
    tmp_path: Path,
) -> None:
    vpay = {"brand": "V PAY", "aid": "A0000000032020", "masked_pan": "482000******0001"}
    host, clock, store = _host(tmp_path)
    try:
        for ev in (
            e.CardPresented("s2", "card", "E1", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 5000, 20, sid="s2", card=vpay),
            e.ChargerStarted("s2", "st", 1000),
            e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=3000),
            res("capture", Outcome.UNKNOWN, None, None, sid="s2", for_ref="20"),
            e.OpenPreauthsReported("s2", "q", ()),
        ):
            host.handle(ev)
            clock.advance(60)
        batch = TerminalResult(
            "end_of_day",
            Outcome.APPROVED,
            totals=(BrandTotal("other", 1, 226, "EUR"),),
            batch_range=("1", "99"),
        )
        host.record_end_of_day("T1", batch, "EUR")
        s2 = host.load("s2")
        assert s2 is not None and s2.state is not State.CAPTURE_FAILED
    finally:
        store.close()


def test_a_session_paid_from_two_holds_in_one_batch_reconciles_clean() -> None:
    s = two_holds(30_000)
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("capture", Outcome.APPROVED, 226, 31, for_ref="8"), 62, P_TOPUP)
    batch = BatchFacts("T1", None, T0 + timedelta(hours=5), "EUR", {"mastercard": (2, 1726)})
    assert unexplained(s, 62, timedelta(hours=6), (batch,)) == ()


def test_late_energy_of_an_unconfirmed_capture_stays_owed_whatever_the_evidence() -> None:
    """Item 12 with an unconfirmed capture: billed to the last trusted reading (a fault), the
    capture unconfirmed, then the charger's stop report says more was delivered. The end of
    day confirms the capture: the late energy is still owed."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7, card=MC), 0)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1)
    s = at(s, e.MeterValue(SID, "m", 11_000), 60)
    s = at(s, e.ChargerFaulted(SID, "f", "link lost"), 61)
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 62)
    s = at(s, e.OpenPreauthsReported(SID, "q", ()), 63)
    assert s.state is State.CAPTURE_UNCONFIRMED and s.bill.owed_minor == 655
    t = step(s, e.ChargerStopped(session_id=SID, event_id="late", meter_wh=13_000), 64)
    assert t.session is not None and t.session.bill.unpaid_minor == 107
    done = at(t.session, evidence(True), 600)
    assert done.state is State.COMPLETED and done.bill.owed_minor == 107


def test_an_evse_without_a_tariff_or_free_vend_is_refused_by_config_validate() -> None:
    site = KWD_SITE.replace('default_tariff = "EUR-T"\n', "")
    with pytest.raises(ConfigError, match="has no tariff"):
        parse_settings(site, "<no tariff>")


def test_holds_captured_either_side_of_an_end_of_day_count_in_their_own_batches(
    tmp_path: Path,
) -> None:
    """s1's hold 7 is captured, hold 8's capture is retried across an end of day (which no
    longer waits for it) and stands after it. s2's capture of the same 2.26 is unconfirmed.
    The second batch's 2.26 is s1's hold 8: s2 was not captured, and both batches reconcile."""
    host, clock, store = _host(tmp_path, P_TOPUP)

    def handle(*events: e.Event) -> None:
        for ev in events:
            host.handle(ev)
            clock.advance(60)

    try:
        handle(
            e.CardPresented("s1", "card", "E1", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 1500, 7, sid="s1", card=MC),
            e.ChargerStarted("s1", "st", 0),
            e.MeterValue("s1", "m", 21_000),
            res("topup", Outcome.APPROVED, 1500, 8, sid="s1", for_ref="7"),
            e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=30_000),
            res("capture", Outcome.APPROVED, 1500, 30, sid="s1", for_ref="7"),
            res("capture", Outcome.DECLINED, None, None, sid="s1", for_ref="8"),
            e.OpenPreauthsReported("s1", "q", ("8",)),
        )
        s1 = host.load("s1")
        assert s1 is not None and s1.state is State.CAPTURE_RETRY
        assert host.open_on_terminal("T1") is None
        _eod(host, 1, 1500)
        clock.advance(60)
        handle(
            e.TimerFired("s1", "retry", e.TimerKind.RETRY),
            res("capture", Outcome.APPROVED, 226, 31, sid="s1", for_ref="8"),
        )
        s1 = host.load("s1")
        assert s1 is not None and s1.state is State.COMPLETED and s1.captured_minor == 1726
        handle(
            e.CardPresented("s2", "card", "E1", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 1500, 20, sid="s2", card=MC),
            e.ChargerStarted("s2", "st", 1000),
            e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=3000),
            res("capture", Outcome.UNKNOWN, None, None, sid="s2", for_ref="20"),
            e.OpenPreauthsReported("s2", "q", ()),
        )
        _eod(host, 1, 226)
        s2 = host.load("s2")
        assert s2 is not None and s2.state is State.CAPTURE_FAILED and s2.captured_minor == 0
        now = clock()
        facts = load_facts(store, now - timedelta(days=1), now, now, upstream=False)
    finally:
        store.close()
    kinds = {f.kind for f in reconcile(facts).unexplained}
    assert not kinds & {"missing_in_journal", "missing_in_terminal_totals", "amount_mismatch"}


async def test_a_drivers_amount_is_read_in_the_currency_the_payment_is_routed_to(
    tmp_path: Path,
) -> None:
    site = route_site(
        "JPY",
        price="55",
        terminal="tk",
        route="kw",
        pricing=SITE_PRICING + 'fixed_hold = { EUR = "50.00", JPY = "5000" }',
        route_keys='safety_margin = "50"\nmin_partial_approval = "500"\n'
        'hold_min = "500"\nhold_max = "20000"',
    )
    settings = parse_settings(site, "<jpy route>")
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        worker, _terminals, _link = build_engine(
            settings, store, lambda: datetime.now(UTC), SimulatedCharger(["E1"])
        )
        worker.status.terminal_state["tk"] = (True, "ok")  # as its registration would have said
        worker.runners["tk"].register_timeout_s = 0.2  # its pre-auth is not carried out here
        worker.on_charger_event(
            PaymentRequested(evse="E1", request_id="r1", target_amount=Decimal(2000))
        )
        (row,) = store.sessions()
        assert row["data"]["currency"] == "JPY"
        assert row["data"]["target_amount_minor"] == 2000
        await worker._park()
    finally:
        store.close()


def _cdr(cdr_id: str, reference: str, before: str) -> Cdr:
    return Cdr.model_validate(
        {
            "country_code": "DE",
            "party_id": "CPO",
            "id": cdr_id,
            "start_date_time": "2026-01-05T08:00:00Z",
            "end_date_time": "2026-01-05T09:00:00Z",
            "authorization_reference": reference,
            "currency": "EUR",
            "total_cost": {"before_taxes": before},
            "total_energy": 6,
            "last_updated": "2026-01-05T09:00:00Z",
        },
        context={"decimal_strings": True},
    )


def test_a_correction_after_a_restart_is_found_behind_ten_thousand_later_cdrs(
    tmp_path: Path,
) -> None:
    """Item 7 on a busy site: the session's first CDR is older than the newest 10,000 stored
    ones. After a restart its correction must still be a correction, not a first CDR (which a
    settled session drops: its energy is billed already)."""
    store = Store.open(tmp_path / "c.sqlite3")
    try:
        first = _cdr("CDR-1", "EVP-s1", "3.00").to_json()
        store.apply(Step("first", inbox=[InboxMessage("m-first", "cpo", "cdr", first)]))
        later = [
            InboxMessage(f"m{n}", "cpo", "cdr", _cdr(f"X-{n}", f"EVP-x{n}", "1.00").to_json())
            for n in range(10_000)
        ]
        store.apply(Step("later", inbox=later))
        link = OcpiChargerLink(
            None, "", "", {"E1": "LOC1"}, ("DE", "EVP"), lambda: datetime.now(UTC), store
        )
        heard: list[ChargerEvent] = []
        link.subscribe(heard.append)
        link.cdr_pushed(_cdr("CDR-2", "EVP-s1", "2.50"))
    finally:
        store.close()
    assert [h.kind for h in heard] == ["price_corrected"]


def test_a_correction_stored_before_a_crash_is_replayed_behind_ten_thousand_cdrs(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "c.sqlite3")
    try:
        store.apply(Step("closed", sessions=[SessionRecord("s1", "completed", {"id": "s1"}, True)]))
        first = _cdr("CDR-1", "EVP-s1", "3.00").to_json()
        store.apply(Step("first", inbox=[InboxMessage("m-first", "cpo", "cdr", first)]))
        later = [
            InboxMessage(f"m{n}", "cpo", "cdr", _cdr(f"X-{n}", f"EVP-x{n}", "1.00").to_json())
            for n in range(10_000)
        ]
        store.apply(Step("later", inbox=later))
        corrected = _cdr("CDR-2", "EVP-s1", "2.50").to_json()
        store.apply(Step("corr", inbox=[InboxMessage("m-corr", "cpo", "cdr", corrected)]))
        link = OcpiChargerLink(
            None, "", "", {"E1": "LOC1"}, ("DE", "EVP"), lambda: datetime.now(UTC), store
        )
        heard: list[ChargerEvent] = []
        link.subscribe(heard.append)
        upstream = UpstreamSettings(
            enabled=True,
            allow_insecure_http=True,
            versions_url="http://127.0.0.1:9/ocpi/versions",
            token_a=SecretRef(value=SecretStr("a")),
            key=SecretRef(value=SecretStr(Fernet.generate_key().decode())),
            listen="127.0.0.1:9",
            public_url="http://127.0.0.1:9/ocpi/versions",
        )
        UpstreamWorker(upstream, "S", store, lambda: datetime.now(UTC), link)._replay_cdrs(link)
    finally:
        store.close()
    ours = [h for h in heard if isinstance(h, PriceCorrection | ChargeStopped)]
    assert [(h.kind, h.session_id) for h in ours if h.session_id == "s1"] == [
        ("price_corrected", "s1")
    ]


async def test_an_end_of_day_waiting_for_the_line_skips_when_a_retried_capture_got_there_first(
    tmp_path: Path,
) -> None:
    """The end of day no longer waits for a capture between its tries. But a retry that fires
    while the end of day waits for the line has a capture sent before the batch closes and
    carried out after it: the end of day must look again once it has the line (skip), or that
    capture is counted in the wrong batch."""
    async with runner_rig(tmp_path, SimConfig(password="123456", card_wait_s=0.05)) as rig:
        runner, _heard = rig.runner()
        async with asyncio.timeout(30):
            await runner.register()
            for ev in (
                e.CardPresented("s1", "card", "E1", "T1", "EUR"),
                res("preauthorize", Outcome.APPROVED, 5000, 7, sid="s1", card=MC),
                e.ChargerStarted("s1", "st", 1000),
                e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=3000),
                res("capture", Outcome.DECLINED, None, None, sid="s1", for_ref="7"),
                e.OpenPreauthsReported("s1", "q", ("7",)),
            ):
                rig.host.handle(ev)
            s1 = rig.host.load("s1")
            assert s1 is not None and s1.state is State.CAPTURE_RETRY
            async with runner._lock:  # the line is busy; the end of day waits for it
                closing = asyncio.create_task(runner.end_of_day())
                await asyncio.sleep(0.05)
                rig.clock.advance(120)
                retried = rig.host.handle(e.TimerFired("s1", "retry", e.TimerKind.RETRY))
                assert [type(x) for x in retried.commands] == [c.Capture]
            assert (await closing).startswith("skipped")
            assert rig.store.last_end_of_day("T1") is None


def test_a_correction_refunded_in_full_leaves_nothing_for_reconciliation() -> None:
    s = at(completed(), correction(500), 90)
    s = at(s, res("refund", Outcome.APPROVED, 155, 9, card=MC), 91)
    assert s.refunded_minor == 155 and s.bill.owed_minor == 0
    assert s.id == SID and s.created_at == T0
    assert unexplained(s, 91, timedelta(hours=2)) == ()
