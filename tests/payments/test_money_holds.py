"""Issue 26, items 3, 4, 11, 12 and the top-up answer convention: what a session of several holds,
a driver's declared amount and a late stop report leave on the books and tell the CPO; and a hold
released too late (simulation seed 201672943): lapsed on the books, never a release not made."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from drivers.base import Outcome
from gateway.ocpi.fac import fac_from_outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.preauth import Target
from gateway.payments.record import from_json, to_json
from gateway.payments.session import HoldStatus, Policy, Session, State, Transition
from gateway.runtime.engine_setup import build_policy
from gateway.settings import load_settings
from tests.payments import fixtures
from tests.payments.fixtures import T0, policy
from tests.payments.fixtures import terminal_result as res

SID = "s1"
P_TOPUP = policy("incremental", topup_terminals=frozenset({"T1"}))


def step(s: Session | None, ev: e.Event, minutes: float, pol: Policy = P_TOPUP) -> Transition:
    return fixtures.step(s, ev, minutes, pol)


def at(s: Session | None, ev: e.Event, minutes: float, pol: Policy = P_TOPUP) -> Session:
    return fixtures.at(s, ev, minutes, pol)


def two_holds(stop_wh: int) -> Session:
    """An incremental session: hold 7 (15.00), a top-up as a new hold 8 (15.00), stopped."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7), 0)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1)
    s = at(s, e.MeterValue(SID, "m", 21_000), 30)  # 12.44 of 15.00: a top-up
    s = at(s, res("topup", Outcome.APPROVED, 1500, 8, for_ref="7"), 31)
    assert [h.ref for h in s.holds] == ["7", "8"]
    return at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=stop_wh), 60)


def outcome_of(t: Transition) -> dict[str, object]:
    (out,) = [x for x in t.commands if isinstance(x, c.Enqueue)]
    return out.payload


def test_a_spare_top_up_hold_that_lapses_unreleased_still_reports_the_money_taken() -> None:
    """Item 3: captured from the first hold, the spare one cannot be released before it lapses.
    The capture is the session's outcome (a FAC for it), the lapsed hold stays on the record."""
    s = two_holds(22_000)  # (1.00 + 22 kWh * 0.45) * 1.19 = 12.97: all from hold 7
    assert [h.target_minor for h in s.holds] == [1297, 0]
    s = at(s, res("capture", Outcome.APPROVED, 1297, 30, for_ref="7"), 61)
    assert s.state is State.RELEASING
    s = at(s, res("release", Outcome.UNKNOWN, None, None, for_ref="8"), 62)
    s = replace(s, expires_at=T0 + timedelta(minutes=90))  # the hold lapses soon
    t = step(s, e.OpenPreauthsReported(SID, "q", (), failed=True), 63)
    u = t.session
    assert u is not None and u.state is State.COMPLETED
    assert u.holds[1].status is HoldStatus.LAPSED and u.open_minor == 1500
    assert any("hold 8" in d and "lapse" in d for d in u.discrepancies)
    fac = fac_from_outcome(outcome_of(t), T0)
    assert fac is not None and fac.capture_status_code == "SUCCESS"
    total = fac.total_costs.before_taxes + sum(x.amount for x in fac.total_costs.taxes or ())
    assert str(total) == "12.97"


def test_a_partly_captured_session_reports_what_was_captured_booked_at_the_first_capture() -> None:
    """Item 4: hold 7 captured, hold 8's capture declined until it lapsed. The CPO hears what
    was captured and what is owed (never "nothing captured"); the booking time is the first
    capture's, so reconciliation counts it in that batch."""
    s = two_holds(30_000)  # 17.26: 15.00 from hold 7, 2.26 from hold 8
    assert [h.target_minor for h in s.holds] == [1500, 226]
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61)
    assert s.bill.captured_at == T0 + timedelta(minutes=61)
    s = at(s, res("capture", Outcome.DECLINED, None, None, for_ref="8"), 62)
    s = replace(s, expires_at=T0 + timedelta(minutes=90))
    t = step(s, e.OpenPreauthsReported(SID, "q", ("8",)), 63)
    u = t.session
    assert u is not None and u.state is State.CAPTURE_FAILED
    assert (u.captured_minor, u.bill.owed_minor) == (1500, 226)
    assert u.bill.captured_at == T0 + timedelta(minutes=61)
    fac = fac_from_outcome(outcome_of(t), T0)
    assert fac is not None and fac.capture_status_code == "PARTIAL_SUCCESS"
    assert "nothing captured" not in (fac.capture_status_message or "")
    assert "2.26" in (fac.capture_status_message or "")
    total = fac.total_costs.before_taxes + sum(x.amount for x in fac.total_costs.taxes or ())
    assert str(total) == "15.00"


def test_a_driver_chosen_amount_is_a_cap() -> None:
    """Item 11: a target of 20.00 holds 22.00 (10 % margin) but the charge stops at 20.00 less
    the safety margin and never captures more than 20.00; the target survives a restart."""
    pol = policy("target")
    card = e.CardPresented(SID, "card", "E1", "T1", "EUR", target=Target(amount_minor=2000))
    s = at(None, card, 0, pol)
    assert s.hold_minor == 2200
    t = step(s, res("preauthorize", Outcome.APPROVED, 2200, 7), 0, pol)
    (auth,) = t.commands
    assert isinstance(auth, c.AuthorizeCharger) and auth.max_cost_minor == 2000 - 50
    s = from_json(to_json(at(t.session, e.ChargerStarted(SID, "st", 0), 1, pol)))
    # (1.00 + 35 kWh * 0.45) * 1.19 = 19.93: at the target less the margin, below the hold's cap
    s = at(s, e.MeterValue(SID, "m", 35_000), 60, pol)
    assert s.state is State.STOPPING
    # the charger stops late: 36 kWh = 20.47, above the driver's 20.00
    s = at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=36_000), 61, pol)
    assert [h.target_minor for h in s.holds] == [2000]
    s = at(s, res("capture", Outcome.APPROVED, 2000, 30, for_ref="7"), 62, pol)
    assert s.state is State.COMPLETED and s.captured_minor == 2000 and s.bill.owed_minor == 0


def test_energy_in_a_late_stop_report_is_a_discrepancy_and_owed() -> None:
    """Item 12: the stop was never confirmed, the last reading was billed; then the charger's
    real stop report says more was delivered: a discrepancy, and the difference is owed."""
    pol = policy()
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    s = at(s, e.MeterValue(SID, "m", 11_000), 60, pol)  # 10 kWh: 6.55
    s = replace(s, timer=(e.TimerKind.EXPIRY, T0 + timedelta(minutes=60)))
    s = at(s, e.TimerFired(SID, "exp", e.TimerKind.EXPIRY), 60, pol)
    assert s.state is State.STOPPING
    s = at(s, e.TimerFired(SID, "stop", e.TimerKind.STOP), 62, pol)
    assert s.state is State.CAPTURING and s.holds[0].target_minor == 655
    # while the capture is out, and again after the session completed
    late = e.ChargerStopped(session_id=SID, event_id="cdr", meter_wh=13_000, reason="late")
    u = at(s, late, 63, pol)
    assert any("late" in d and "2000 Wh" in d for d in u.discrepancies)
    assert u.bill.unpaid_energy_wh == 2000 and u.bill.unpaid_minor == 107  # 2 kWh * 0.45 * 1.19
    t = step(u, res("capture", Outcome.APPROVED, 655, 30, for_ref="7"), 64, pol)
    done = t.session
    assert done is not None and done.state is State.COMPLETED and done.bill.owed_minor == 107
    fac = fac_from_outcome(outcome_of(t), T0)
    assert fac is not None and fac.id == SID and fac.capture_status_code == "PARTIAL_SUCCESS"
    assert at(done, late, 65, pol) == done  # the same report again: no second debt

    # the report arrives only after the session completed
    final = at(s, res("capture", Outcome.APPROVED, 655, 30, for_ref="7"), 63, pol)
    assert final.state is State.COMPLETED and final.bill.owed_minor == 0
    t = step(final, late, 64, pol)
    v = t.session
    assert v is not None and v.bill.owed_minor == 107
    assert any("late" in d and "2000 Wh" in d for d in v.discrepancies)
    fac = fac_from_outcome(outcome_of(t), T0)
    assert fac is not None and fac.id == f"{SID}-U" and fac.capture_status_code == "FAILED"


def test_a_top_up_answered_with_the_reservations_new_total_is_not_counted_twice() -> None:
    """The engine reads a top-up's amount as the increment (the driver translates a terminal
    that answers totals, ``topup_amount``). An answer above what was asked cannot be one: it is
    the reservation's new total when it follows from the hold we know, else unknown."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7), 0)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1)
    s = at(s, e.MeterValue(SID, "m", 21_000), 30)
    assert s.state is State.TOPPING_UP
    total = at(s, res("topup", Outcome.APPROVED, 3000, 7, for_ref="7"), 31)
    assert total.holds[0].amount_minor == 3000 and total.state is State.CHARGING
    odd = at(s, res("topup", Outcome.APPROVED, 4000, 7, for_ref="7"), 31)
    assert odd.holds[0].amount_minor == 1500 and odd.holds[0].uncertain
    assert odd.topup_refused and any("4000" in d for d in odd.discrepancies)


P_SILENCE = policy(meter_silence={"E1": timedelta(minutes=15)})


def test_a_silent_charger_is_stopped_and_billed_to_its_last_trusted_reading() -> None:
    """Silent chargers: no reading for the EVSE's meter-silence deadline. The charger is asked
    for its state first; with no answer in the bounded wait it is stopped; with no answer to the
    stop the charge is billed to the last trusted reading with the gap on the record; a reading
    that comes later is a recorded discrepancy (and owed where more was delivered), never lost."""
    pol = P_SILENCE
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    assert s.timer == (e.TimerKind.SILENCE, T0 + timedelta(minutes=16))
    s = at(s, e.MeterValue(SID, "m1", 6_000), 10, pol)
    s = at(s, e.MeterValue(SID, "m2", 11_000, trusted=False), 20, pol)  # unsigned, untrusted
    assert s.timer == (e.TimerKind.SILENCE, T0 + timedelta(minutes=35))
    t = step(s, e.TimerFired(SID, "sil", e.TimerKind.SILENCE), 35, pol)
    assert t.session is not None and t.session.state is State.CHARGING
    assert [type(x).__name__ for x in t.commands] == ["RequestChargerState"]
    assert t.session.timer == (e.TimerKind.STATE, T0 + timedelta(minutes=36))
    t = step(t.session, e.TimerFired(SID, "state", e.TimerKind.STATE), 36, pol)
    assert t.session is not None and t.session.state is State.STOPPING
    assert [type(x).__name__ for x in t.commands] == ["StopCharger"]
    u = at(t.session, e.TimerFired(SID, "stop", e.TimerKind.STOP), 37, pol)
    assert u.state is State.CAPTURING and u.metering.billed_energy_wh == 5_000
    assert any("silent" in d and "08:10" in d for d in u.discrepancies)
    late = at(u, e.MeterValue(SID, "m3", 16_000), 40, pol)
    assert any("16000" in d or "15000 Wh" in d for d in late.discrepancies)


def test_a_silent_charger_that_delivered_nothing_has_its_hold_released() -> None:
    pol = P_SILENCE
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    s = at(s, e.TimerFired(SID, "sil", e.TimerKind.SILENCE), 16, pol)
    s = at(s, e.TimerFired(SID, "state", e.TimerKind.STATE), 17, pol)
    t = step(s, e.TimerFired(SID, "stop", e.TimerKind.STOP), 18, pol)
    assert t.session is not None and t.session.state is State.RELEASING
    assert [type(x).__name__ for x in t.commands] == ["Release"]


def test_a_silent_charger_that_answers_the_state_request_goes_on_charging() -> None:
    """Asked for its state, the charger reports a reading: it is alive, the charge goes on and
    the silence deadline starts again from that reading (it used to be stopped unasked)."""
    pol = P_SILENCE
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    s = at(s, e.TimerFired(SID, "sil", e.TimerKind.SILENCE), 16, pol)
    s = at(s, e.MeterValue(SID, "answer", 4_000), 16.5, pol)
    assert s.state is State.CHARGING
    assert s.timer == (e.TimerKind.SILENCE, T0 + timedelta(minutes=31.5))
    assert step(s, e.TimerFired(SID, "state", e.TimerKind.STATE), 17, pol).commands == ()


def test_the_meter_silence_deadline_is_set_per_evse_in_the_example_configuration() -> None:
    settings = load_settings(Path(__file__).parents[2] / "config" / "gateway.example.toml")
    silences = build_policy(settings).meter_silence
    assert silences and set(silences.values()) == {timedelta(minutes=15)}


def test_late_energy_in_a_session_that_captured_nothing_keeps_the_whole_debt_in_its_fac() -> None:
    """Review: the session's own outcome with late energy is never turned into a FAC of that
    energy alone; a capture that lapsed is owed in full, the late energy with it."""
    pol = policy()
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    s = at(s, e.MeterValue(SID, "m", 11_000), 60, pol)
    s = at(s, e.ChargerFaulted(SID, "f", "ground fault"), 61, pol)
    s = at(s, e.ChargerStopped(session_id=SID, event_id="cdr", meter_wh=13_000), 62, pol)
    assert s.bill.unpaid_minor == 107
    s = at(s, res("capture", Outcome.DECLINED, None, None, for_ref="7"), 63, pol)
    s = replace(s, expires_at=T0 + timedelta(minutes=90))
    t = step(s, e.OpenPreauthsReported(SID, "q", ("7",)), 64, pol)
    assert t.session is not None and t.session.state is State.CAPTURE_FAILED
    assert t.session.bill.owed_minor == 655 + 107
    fac = fac_from_outcome(outcome_of(t), T0)
    assert fac is not None and fac.id == SID and fac.capture_status_code == "FAILED"
    total = fac.total_costs.before_taxes + sum(x.amount for x in fac.total_costs.taxes or ())
    assert str(total) == "7.62"


def test_a_driver_chosen_energy_stops_the_charge_there() -> None:
    """Item 11, the energy form: a target of 12.5 kWh is kept on the session and stops there."""
    pol = policy("target")
    card = e.CardPresented(SID, "card", "E1", "T1", "EUR", target=Target(kwh=Decimal("12.5")))
    s = at(None, card, 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, s.hold_minor, 7), 0, pol)
    s = from_json(to_json(at(s, e.ChargerStarted(SID, "st", 0), 1, pol)))
    assert s.target_energy_wh == 12_500
    assert at(s, e.MeterValue(SID, "m1", 12_000), 30, pol).state is State.CHARGING
    assert at(s, e.MeterValue(SID, "m2", 12_500), 31, pol).state is State.STOPPING


def _release_lost(expires_in_minutes: float) -> Session:
    """A charge that never started: the start timer releases hold 7, the answer is lost."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7), 0)
    s = replace(s, expires_at=T0 + timedelta(minutes=expires_in_minutes))
    s = at(s, e.TimerFired(SID, "t", e.TimerKind.START), 4)
    assert s.state is State.RELEASING
    s = at(s, res("release", Outcome.UNKNOWN, None, None, for_ref="7"), 5)
    assert s.state is State.RELEASE_UNKNOWN
    return s


def test_a_hold_gone_after_its_validity_is_lapsed_not_released() -> None:
    """Simulation seed 201672943: a stalled gateway released a hold after it had lapsed and the
    answer was lost. Its absence from the terminal's open list proves no release: the record
    says lapsed (nothing released, nothing taken), not a release the terminal never made."""
    s = _release_lost(expires_in_minutes=3)
    u = at(s, e.OpenPreauthsReported(SID, "q", ()), 6)
    assert u.holds[0].status is HoldStatus.LAPSED
    assert (u.captured_minor, u.released_minor) == (0, 0)
    assert u.state is State.RELEASE_FAILED and u.final


def test_a_hold_gone_while_still_valid_was_released() -> None:
    """Before its validity ends only our release can have ended the hold: booked once two
    lists a retry interval apart omit it (one list proves nothing: test_release_evidence)."""
    s = _release_lost(expires_in_minutes=600)
    s = at(s, e.OpenPreauthsReported(SID, "q1", ()), 6)
    assert s.state is State.RELEASE_UNKNOWN
    u = at(s, e.OpenPreauthsReported(SID, "q", ()), 6.5)
    assert u.holds[0].status is HoldStatus.RELEASED and u.released_minor == 1500
    assert u.state is State.VOIDED
