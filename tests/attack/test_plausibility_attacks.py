"""Attacks on the meter plausibility rule (issue 27), as the session engine applies it: readings
that game the rule, stops that bypass it, replayed signed records."""

from __future__ import annotations

from datetime import timedelta

from gateway.fiscal.meter import SignedMeter
from gateway.payments import events as e
from gateway.payments.session import Session, State, transition
from tests.payments import fixtures
from tests.payments.fixtures import T0, policy
from tests.payments.test_session import SID, authorized, charging

RATED = policy(rated_power_w={"E1": 11_000})  # an 11 kW EVSE


def at(s: Session, ev: e.Event, minutes: float) -> Session:
    return fixtures.at(s, ev, minutes, RATED)


def test_many_small_steps_cannot_outrun_the_rated_power() -> None:
    """1 kWh a minute in 100 Wh steps (60 kW on an 11 kW EVSE): every step past the allowance
    is a discrepancy; the billed energy never exceeds what 11 kW allows. (HOLDS expected)"""
    s = charging()
    for n in range(1, 200):
        s = at(s, e.MeterValue(SID, f"m{n}", 1000 + 100 * n), 1 + n * 0.1)
    allowed = 11_000 * (1 + 199 * 0.1) / 60 + 50
    assert s.metering.readings[-1].energy_wh <= allowed
    assert s.discrepancies


def test_a_reading_exactly_at_the_limit_is_taken_and_one_more_wh_is_not() -> None:
    s = charging()  # started at minute 1; the session was created at T0
    limit = int(11_000 * (60 / 60)) + 50  # 60 minutes after creation
    ok = at(s, e.MeterValue(SID, "m1", 1000 + limit), 60)
    assert ok.metering.readings[-1].energy_wh == limit
    over = at(charging(), e.MeterValue(SID, "m1", 1000 + limit + 1), 60)
    assert over.discrepancies and over.metering.readings == charging().metering.readings


def test_the_same_stop_reading_repeated_is_harmless() -> None:
    s = at(charging(), e.MeterValue(SID, "m1", 1000 + 3000), 30)
    stop = at(s, e.ChargerStopped(session_id=SID, event_id="stopped:a", meter_wh=1000 + 3000), 31)
    again = transition(
        stop,
        e.ChargerStopped(session_id=SID, event_id="stopped:b", meter_wh=1000 + 3000),
        T0,
        RATED,
    )
    assert stop.metering.billed_energy_wh == 3000
    assert again.session is not None and again.session.metering.billed_energy_wh == 3000


def test_a_stop_with_only_the_session_energy_is_screened() -> None:
    s = charging()
    stop = at(
        s,
        e.ChargerStopped(
            session_id=SID, event_id="stopped:x", meter_wh=None, session_energy_wh=10**9
        ),
        2,
    )
    assert stop.metering.billed_energy_wh <= 11_000 * 2 / 60 + 50, stop.metering.billed_energy_wh


def test_a_zero_energy_stop_before_any_meter_value_releases_the_hold() -> None:
    """By design (HOLDS as documented): 0 Wh after 50 minutes with no reading is plausible (the
    EV never drew), so the hold is released. Only the charger's own tree may say so; see
    test_charger_link_attacks for the hole that lets another charger say it."""
    stop = at(
        charging(),
        e.ChargerStopped(session_id=SID, event_id="stopped:x", meter_wh=None, session_energy_wh=0),
        50,
    )
    assert stop.metering.billed_energy_wh == 0 and stop.state is not State.CHARGING


def test_a_replayed_signed_record_from_another_session_is_not_the_billing_truth() -> None:
    s = at(charging(), e.MeterValue(SID, "m1", 1000 + 6000), 40)
    old = SignedMeter("o" * 64, "OCMF|{}|{}", "M1", "", 90_000, 90_200, True, "ok", "key")
    stop = at(
        s,
        e.ChargerStopped(session_id=SID, event_id="stopped:x", meter_wh=1000 + 6000, signed=old),
        41,
    )
    assert stop.metering.billed_energy_wh >= 6000, stop.metering.billed_energy_wh


def test_a_stop_before_the_start_records_the_energy_as_owed() -> None:
    """The charger's stop (with 4 kWh) overtakes its start: the hold is given back, but the
    energy is owed, never dropped; the late start changes nothing. (HOLDS expected)"""
    s = authorized()
    stop = at(
        s,
        e.ChargerStopped(
            session_id=SID, event_id="stopped:x", meter_wh=1000 + 4000, session_energy_wh=4000
        ),
        2,
    )
    assert stop.bill.unpaid_energy_wh == 4000 and stop.bill.unpaid_minor > 0
    late = transition(stop, e.ChargerStarted(SID, "st", 1000), T0 + timedelta(minutes=3), RATED)
    assert late.session is not None and late.session.bill.unpaid_energy_wh == 4000


def test_a_reading_arriving_late_after_a_restart_is_still_taken() -> None:
    """No charger timestamps are trusted: a burst delivered late only widens the allowance.
    (HOLDS expected)"""
    s = charging()
    for n, minutes in enumerate((120, 120.01, 120.02), 1):
        s = at(s, e.MeterValue(SID, f"m{n}", 1000 + 5000 * n), minutes)
    assert s.metering.readings[-1].energy_wh == 15_000 and not s.discrepancies


def test_a_rated_power_typed_too_low_does_not_make_every_charge_free() -> None:
    p = policy(rated_power_w={"E1": 11})  # rated_power_kw = 0.011 (the operator meant 11)
    s = charging()
    for minutes, ev in (
        (30, e.MeterValue(SID, "m1", 1000 + 3000)),
        (
            60,
            e.ChargerStopped(
                session_id=SID, event_id="stopped:a", meter_wh=1000 + 6000, session_energy_wh=6000
            ),
        ),
    ):
        t = transition(s, ev, T0 + timedelta(minutes=minutes), p)
        assert t.session is not None
        s = t.session
    assert s.timer is not None
    expired = transition(s, e.TimerFired(SID, "exp", s.timer[0]), s.timer[1], p).session
    assert expired is not None
    again = transition(
        expired,
        e.ChargerStopped(
            session_id=SID, event_id="stopped:b", meter_wh=1000 + 6000, session_energy_wh=6000
        ),
        s.timer[1] + timedelta(minutes=1),
        p,
    ).session
    assert again is not None
    assert again.metering.billed_energy_wh > 0, (again.state, again.metering.billed_energy_wh)
