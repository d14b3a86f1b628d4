"""Issue 26, the engine's side of corrections and debts: a corrected price moves the debt with
it, waits for a refund in flight, never nets across currencies; a technician's resolution
settles the debt through the engine. Each test failed on main."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import update
from gateway.payments.preauth import HoldPolicy
from gateway.payments.record import to_json
from gateway.payments.refunds import RefundStatus
from gateway.payments.session import Session, State, Transition, transition
from gateway.store import SessionRecord, Step, Store
from tests.helpers import EVPAY, subprocess_env
from tests.payments.fixtures import T0, policy
from tests.site_rig import write_config

SID = "s1"
SMALL = HoldPolicy(strategy="fixed", fixed_minor={"EUR": 300}, min_minor=100, max_minor=15000)


def run(s: Session | None, ev: e.Event, minutes: float, **overrides: object) -> Transition:
    return transition(s, ev, T0 + timedelta(minutes=minutes), policy("fixed", **overrides))


def approved(op: str, amount: int, receipt: int, **more: object) -> e.TerminalResultArrived:
    return e.TerminalResultArrived(
        session_id=SID,
        event_id=f"{op}-{receipt}",
        operation=e.Operation(op),
        outcome=Outcome.APPROVED,
        amount_minor=amount,
        ref=str(receipt),
        **more,  # type: ignore[arg-type]
    )


def completed(hold: int = 5000) -> Session:
    """4 kWh at the fixtures' tariff: 3.33 EUR, captured from a hold of ``hold``."""
    small = {"hold": replace(SMALL, fixed_minor={"EUR": hold})}
    s = run(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, **small).session
    s = run(s, approved("preauthorize", hold, 7), 0, **small).session
    s = run(s, e.ChargerStarted(SID, "st", 1000), 1, **small).session
    stop = e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5000)
    s = run(s, stop, 60, **small).session
    s = run(s, approved("capture", min(hold, 333), 8, for_ref="7"), 61, **small).session
    assert s is not None and s.state is State.COMPLETED
    return s


def correction(total: int, n: int = 2, cur: str | None = None) -> e.PriceCorrected:
    more = {"currency": cur} if cur else {}
    return e.PriceCorrected(
        session_id=SID,
        event_id=f"price-cdr-{n}",
        total_minor=total,
        reason=f"corrected CDR {n}",
        **more,  # type: ignore[arg-type]
    )


# ---- item 6: the debt follows the corrected price ----------------------------------------------


def test_a_corrected_price_moves_the_debt_with_it() -> None:
    short = completed(hold=300)  # priced 333, held and captured 300: 33 owed, a shortfall
    assert (short.bill.owed_minor, short.bill.shortfall_minor) == (33, 33)
    lower = run(short, correction(250), 90)
    (refund,) = lower.commands
    assert isinstance(refund, c.RefundPayment) and refund.amount_minor == 50
    assert lower.session is not None
    assert (lower.session.bill.owed_minor, lower.session.bill.shortfall_minor) == (0, 0)
    between = run(short, correction(320), 90).session  # still above the capture: 20 owed
    assert between is not None and (between.bill.owed_minor, between.bill.shortfall_minor) == (
        20,
        20,
    )
    higher = run(completed(), correction(400), 90).session  # captured 333 in full: 67 owed now
    assert higher is not None and higher.bill.owed_minor == 67


# ---- item 8: a correction while another refund is in flight waits for it ------------------------


def test_a_correction_while_a_refund_is_in_flight_is_made_once_that_refund_settles() -> None:
    ask = e.RefundRequested(session_id=SID, event_id="goodwill", amount_minor=100, reason="x")
    s = run(completed(), ask, 90).session
    t = run(s, correction(200), 91)
    assert t.commands == () and t.session is not None
    assert all(r.status is not RefundStatus.REFUSED for r in t.session.refunds)
    done = run(t.session, approved("refund", 100, 9), 92)  # 233 left: 33 above the correction
    refunds = [x for x in done.commands if isinstance(x, c.RefundPayment)]
    assert [x.amount_minor for x in refunds] == [33]
    s = run(done.session, approved("refund", 33, 10), 93).session
    assert s is not None and s.refundable_minor == 200 and s.bill.owed_minor == 0


# ---- item 9: never net a correction in another currency ----------------------------------------


def test_a_correction_in_another_currency_is_refused_and_recorded() -> None:
    t = run(completed(), correction(250, cur="JPY"), 90)
    assert not any(isinstance(x, c.RefundPayment) for x in t.commands)
    s = t.session
    assert s is not None and s.refundable_minor == 333 and s.bill.owed_minor == 0
    (refused,) = s.refunds
    assert refused.status is RefundStatus.REFUSED and "JPY" in refused.message
    assert any("JPY" in d for d in s.discrepancies)


# ---- --resolve settles the debt through the engine ---------------------------------------------


def test_resolving_an_owed_finding_lowers_the_debt(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    store = Store.open(tmp_path / "evpay.sqlite3")
    owing = update(
        Session("s1", "E1", "T1", "EUR", State.CAPTURE_FAILED, T0), price_minor=500, owed_minor=500
    )
    record = SessionRecord("s1", owing.state.value, to_json(owing), True, 500, "T1")
    store.apply(Step("seed", sessions=[record]))
    store.close()
    resolve = ["--resolve", "owed_overdue:s1", "--reason", "paid in cash at the kiosk"]
    done = subprocess.run(
        [*EVPAY, "reconcile", "--config", str(config), *resolve],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    store = Store.open(tmp_path / "evpay.sqlite3", read_only=True)
    try:
        assert [r["id"] for r in store.sessions(owing=True)] == []
        kinds = [j["kind"] for j in store.journal_of("session")]
        assert "DebtResolved" in kinds
    finally:
        store.close()


def test_a_goodwill_refund_after_a_correction_makes_no_debt() -> None:
    s = run(completed(), correction(200), 90).session  # 133 refunded: 200 paid
    s = run(s, approved("refund", 133, 9), 91).session
    ask = e.RefundRequested(session_id=SID, event_id="goodwill", amount_minor=50, reason="sorry")
    s = run(s, ask, 92).session
    s = run(s, approved("refund", 50, 10), 93).session
    assert s is not None and s.refundable_minor == 150 and s.bill.owed_minor == 0


def test_resolving_a_shortfall_settles_that_part_of_the_debt() -> None:
    short = run(completed(hold=300), correction(400), 90).session  # 100 owed, 100 above the hold
    assert short is not None and (short.bill.owed_minor, short.bill.shortfall_minor) == (100, 100)
    part = e.DebtResolved(
        session_id=SID, event_id="r", reason="paid at the kiosk", part="shortfall"
    )
    s = run(short, part, 91).session
    assert s is not None and (s.bill.owed_minor, s.bill.shortfall_minor) == (0, 0)
    again = run(s, correction(450, n=3), 92).session  # a later correction never revives it
    assert again is not None and again.bill.owed_minor == 0


def test_a_correction_while_the_capture_is_under_way_is_made_once_it_is_settled() -> None:
    s = run(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0).session
    s = run(s, approved("preauthorize", 5000, 7), 0).session
    s = run(s, e.ChargerStarted(SID, "st", 1000), 1).session
    s = run(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5000), 60).session
    assert s is not None and s.state is State.CAPTURING
    s = run(s, correction(250), 60.5).session  # the CPO corrects before our capture is booked
    done = run(s, approved("capture", 333, 8, for_ref="7"), 61)
    assert done.session is not None and done.session.state is State.COMPLETED
    (refund,) = [x for x in done.commands if isinstance(x, c.RefundPayment)]
    assert refund.amount_minor == 83 and done.session.bill.owed_minor == 0
