"""The engine defects the reference model found (issue 26; ``test_simulation.py``), each replayed
as the exact event sequence that shows it, through ``transition()``."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.session import HoldStatus, Session, State, Transition, transition
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import T0, Clock, policy

SID = "s1"
MC = {"brand": "MasterCard", "aid": "A0000000041010", "masked_pan": "541333******0074"}
P = policy("fixed")
P_TOPUP = policy("incremental", topup_terminals=frozenset({"T1"}))


def step(s: Session | None, ev: e.Event, minutes: float, pol: object = P) -> Transition:
    return transition(s, ev, T0 + timedelta(minutes=minutes), pol)  # type: ignore[arg-type]


def at(s: Session | None, ev: e.Event, minutes: float, pol: object = P) -> Session:
    t = step(s, ev, minutes, pol)
    assert t.session is not None
    return t.session


def res(
    op: str, outcome: Outcome, amount: int | None, receipt: int | None, **kw: object
) -> e.Event:
    return e.TerminalResultArrived(
        session_id=SID,
        event_id=f"{op}-{outcome}-{amount}-{receipt}-{kw.get('for_receipt')}",
        operation=op,  # type: ignore[arg-type]
        outcome=outcome,
        amount_minor=amount,
        receipt_no=receipt,
        **kw,  # type: ignore[arg-type]
    )


# ---- seed 1668930904: a hold's validity counted from its answer --------------------------------


def test_a_hold_approved_but_heard_late_lapses_when_the_terminal_says_not_later() -> None:
    """The pre-auth answer arrives 27 h after the terminal made the hold (a stall); the
    release's answer is lost and the enquiry finds the hold gone 30 days after it was asked
    for: the issuer let it lapse, our release is not proven. Counting the validity from the
    answer made the engine book a release of 5000 the terminal never made."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    late = 27 * 60
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7, card=MC), late)
    assert s.expires_at == T0 + timedelta(days=30)
    s = at(s, e.TimerFired(SID, "start", e.TimerKind.START), late + 3)  # never started
    assert s.state is State.RELEASING
    s = at(s, res("release", Outcome.UNKNOWN, None, None, for_receipt=7), late + 4)
    s = at(s, e.OpenPreauthsReported(SID, "q", ()), 30 * 24 * 60 + 60)
    assert s.state is State.RELEASE_FAILED
    assert s.holds[0].status is HoldStatus.LAPSED and s.released_minor == 0


# ---- new: adopted hold ------------------------------------------------------------------------


def test_a_lost_preauth_never_adopts_a_hold_another_lost_preauth_may_own(tmp_path: Path) -> None:
    """Two drivers one after another on one terminal, both pre-auth answers lost (simulation seed
    1668930904, sessions 253 and 254): the terminal made a hold of 717 for the first only. Its
    last result (the first's hold) fits the second's amount too, so it proves nothing about
    the second: the second must not adopt it (it did, and released the first driver's hold as
    its own); the hold is left to its owner or the orphan sweep, and the second says so."""
    clock = Clock()
    store = Store.open(tmp_path / "a.sqlite3", clock=clock)
    host = EngineHost(store, P_TOPUP, clock)
    host.handle(e.CardPresented("a", "card", "E1", "T1", "EUR"))
    clock.advance(1)
    host.handle(e.CardPresented("b", "card", "E2", "T1", "EUR"))
    for sid in ("a", "b"):
        clock.advance(5)
        lost = res("preauthorize", Outcome.UNKNOWN, None, None)
        host.handle(replace(lost, session_id=sid))
    last = e.LastResult(approved=True, receipt_no=579, amount_minor=717)
    clock.advance(5)
    handled = host.handle(e.OpenPreauthsReported("b", "qb", (579,), last=last))
    b = handled.session
    assert b is not None and b.state is State.FAILED and not b.holds
    assert any("579" in n and "not attributable" in n for n in b.notes)
    clock.advance(5)  # nor can the owner prove it (b's lost pre-auth fits it as well)
    handled = host.handle(e.OpenPreauthsReported("a", "qa", (579,), last=last))
    a = handled.session
    assert a is not None and a.state is State.FAILED and not a.holds
    released = [x for x in handled.commands if isinstance(x, c.Release)]
    assert [x.receipt_no for x in released] == [579]  # the orphan sweep gives it back at once


# ---- new: late top-up --------------------------------------------------------------------------


def _topping_up(stop_wh: int) -> Session:
    """An incremental session on hold 7 (15.00) asks for a top-up; the charger stops before the
    top-up's answer comes."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, P_TOPUP)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7), 0, P_TOPUP)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, P_TOPUP)
    s = at(s, e.MeterValue(SID, "m", 21_000), 30, P_TOPUP)  # 12.44 of 15.00: a top-up
    assert s.state is State.TOPPING_UP
    return at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=stop_wh), 31, P_TOPUP)


def test_a_top_up_approved_after_the_stop_pays_the_price_above_the_first_hold() -> None:
    """The top-up (hold 8) is approved after the stop report: it is money held for this price.
    It used to be released while the price above hold 7 stayed owed; the bill now waits for the
    top-up's answer and captures 1500 + 226 for 30 kWh (17.26), nothing owed."""
    s = _topping_up(30_000)
    assert not any(h.target_minor for h in s.holds)  # the bill waits for the top-up
    s = at(s, res("topup", Outcome.APPROVED, 1500, 8, for_receipt=7), 32, P_TOPUP)
    assert s.state is State.CAPTURING
    assert [h.target_minor for h in s.holds] == [1500, 226] and s.bill.shortfall_minor == 0
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_receipt=7), 33, P_TOPUP)
    s = at(s, res("capture", Outcome.APPROVED, 226, 31, for_receipt=8), 34, P_TOPUP)
    assert s.state is State.COMPLETED and s.captured_minor == 1726 and s.bill.owed_minor == 0


def test_a_top_up_lost_after_the_stop_is_billed_when_its_answer_times_out() -> None:
    """No answer to the top-up: the bill waits at most the answer timeout, then captures hold 7
    by booking its amount (the terminal may have raised it) and the rest is owed."""
    s = _topping_up(30_000)
    assert s.timer is not None and s.timer[0] is e.TimerKind.ANSWER
    minutes = (s.timer[1] - T0).total_seconds() / 60
    s = at(s, e.TimerFired(SID, "answer", e.TimerKind.ANSWER), minutes, P_TOPUP)
    assert s.state is State.CAPTURING and s.holds[0].uncertain
    assert s.holds[0].target_minor == 1500 and s.bill.shortfall_minor == 226
