"""attack-money (round 3), more combinations: two holds, corrections against partly
unconfirmed captures, a 3-decimal route's own margins, brand groups in the terminal's totals,
late energy, an EVSE without a tariff, a driver's amount in the routed currency (see
test_attack_round3_money.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.base import BrandTotal, Outcome, TerminalResult
from gateway.errors import ConfigError
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.charger import (
    PaymentRequested,
)
from gateway.payments.reconcile import BatchFacts
from gateway.payments.session import HoldStatus, State
from gateway.runtime.charger import SimulatedCharger
from gateway.runtime.engine_setup import build_engine, build_policy
from gateway.settings import parse_settings
from gateway.store import Store
from tests.attack.round3_rig import (
    MC,
    P_TOPUP,
    SID,
    completed,
    correction,
    evidence,
    make_host,
    refunds_sent,
    two_holds,
    unexplained,
)
from tests.payments.fixtures import T0, at, step
from tests.payments.fixtures import terminal_result as res
from tests.site_rig import route_site

SITE_PRICING = 'strategy = "fixed"\nsafety_margin = "0.50"\nmin_partial_approval = "5.00"\n'
KWD_SITE = route_site(
    "KWD",
    price="0.125",
    terminal="tk",
    route="kw",
    pricing=SITE_PRICING + 'fixed_hold = { EUR = "50.00", KWD = "15.000" }',
    route_keys='hold_min = "1.000"\nhold_max = "50.000"',
)


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
    host, clock, store = make_host(tmp_path)
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


def test_a_correction_refunded_in_full_leaves_nothing_for_reconciliation() -> None:
    s = at(completed(), correction(500), 90)
    s = at(s, res("refund", Outcome.APPROVED, 155, 9, card=MC), 91)
    assert s.refunded_minor == 155 and s.bill.owed_minor == 0
    assert s.id == SID and s.created_at == T0
    assert unexplained(s, 91, timedelta(hours=2)) == ()
