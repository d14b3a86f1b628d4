"""Round 4 attack on "Merge ledger-xfails" (issue 26): a lost top-up asked about before
billing (``topups.topup_enquired``) and ZVT display refs; its pricing half (the step_size floor,
mixed VAT rates) is test_attack_ledger_round4_pricing.py. Each probe that holds guards the
behaviour; a break is a strict xfail naming its cause and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.receipts import receipt_facts
from gateway.payments.session import Session, State
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import T0, Clock, at, policy, step
from tests.payments.fixtures import terminal_result as res
from tests.zvt.conftest import Rig

SID = "s1"
P_TOPUP = policy("incremental", topup_terminals=frozenset({"T1"}))


# ---- 1. a lost top-up asked about before billing ------------------------------------------------


def _asked(first_trace: int | None = 11, *, stop_wh: int | None = None) -> Session:
    """Hold 7 (15.00, trace ``first_trace``), a top-up of 15.00 whose answer is lost: the
    terminal is asked (a QueryOpenPreauths out, the top-up still open)."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, P_TOPUP)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=first_trace), 0, P_TOPUP)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, P_TOPUP)
    s = at(s, e.MeterValue(SID, "m", 21_000), 30, P_TOPUP)
    assert s.state is State.TOPPING_UP and s.topup_minor == 1500
    t = step(s, res("topup", Outcome.UNKNOWN, None, None, for_ref="7"), 31, P_TOPUP)
    assert [type(x).__name__ for x in t.commands] == ["QueryOpenPreauths"]
    assert t.session is not None and t.session.topup_asked
    s = t.session
    if stop_wh is not None:
        s = at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=stop_wh), 31.5, P_TOPUP)
    return s


def _answer(s: Session, last: e.LastResult | None, refs: tuple[str, ...] = ("7",)) -> Session:
    return at(s, e.OpenPreauthsReported(SID, "q", refs, last=last), 32, P_TOPUP)


def _captures(t_commands: tuple[c.Command, ...] | list[c.Command]) -> list[c.Capture]:
    return [x for x in t_commands if isinstance(x, c.Capture)]


def test_a_declined_last_result_proves_no_top_up() -> None:
    """The terminal's last result is a decline of hold 7 (the top-up refused, its answer lost):
    no money added, the hold uncertain (booked, never released by difference), the rest owed."""
    s = _answer(
        _asked(stop_wh=30_000),
        e.LastResult(approved=False, ref="7", amount_minor=1500, trace_no=12),
    )
    assert s.authorized_minor == 1500 and s.topup_refused and s.holds[0].uncertain
    assert s.state is State.CAPTURING and s.holds[0].target_minor == 1500
    assert s.bill.shortfall_minor == 226


def test_another_sessions_transaction_as_last_result_proves_nothing() -> None:
    """Two EVSEs on one terminal: the last result is the other session's hold 9 (approved, a
    new trace). It is not this hold's top-up: the cap stays."""
    last = e.LastResult(approved=True, ref="9", amount_minor=1500, trace_no=12)
    s = _answer(_asked(stop_wh=30_000), last, refs=("7", "9"))
    assert s.authorized_minor == 1500 and s.holds[0].uncertain and s.topup_refused
    assert [h.ref for h in s.holds] == ["7"]


def test_a_last_result_for_hold_7_that_is_no_longer_open_proves_nothing() -> None:
    """The last result says hold 7 was raised, but the open pre-auth list no longer has 7 (the
    issuer let it lapse, or it was reversed): no proof, never a raised cap."""
    last = e.LastResult(approved=True, ref="7", amount_minor=1500, trace_no=12)
    s = _answer(_asked(stop_wh=30_000), last, refs=())
    assert s.authorized_minor == 1500 and s.topup_refused


def test_a_failed_enquiry_proves_nothing_and_bills() -> None:
    last = e.LastResult(approved=True, ref="7", amount_minor=1500, trace_no=12)
    s = at(
        _asked(stop_wh=30_000),
        e.OpenPreauthsReported(SID, "q", ("7",), failed=True, last=last),
        32,
        P_TOPUP,
    )
    assert s.authorized_minor == 1500 and s.state is State.CAPTURING and s.holds[0].uncertain


def test_an_enquiry_that_never_answers_has_a_deadline_then_bills_and_ends() -> None:
    """Charger stopped while the enquiry is out, and the terminal never answers: the answer
    timer gives up, the hold is captured by booking its amount, the capture completes."""
    s = _asked(stop_wh=30_000)
    assert s.timer is not None and s.timer[0] is e.TimerKind.ANSWER
    minutes = (s.timer[1] - T0).total_seconds() / 60
    t = step(s, e.TimerFired(SID, "ans", e.TimerKind.ANSWER), minutes, P_TOPUP)
    assert t.session is not None and t.session.state is State.CAPTURING
    assert [x.ref for x in _captures(t.commands)] == ["7"]
    s = at(t.session, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), minutes + 1, P_TOPUP)
    assert s.state is State.COMPLETED and s.captured_minor == 1500 and s.bill.owed_minor == 226


def test_the_cap_reached_during_an_unanswered_enquiry_stops_bills_and_ends() -> None:
    """The cap is reached (stop sent, a stop deadline) while the top-up is out; its answer is
    lost and the terminal asked; neither the charger nor the terminal ever answers. Each wait
    has a deadline: the stop deadline bills to the last reading, the bill waits for the answer
    at most one more answer timeout, then captures."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, P_TOPUP)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=11), 0, P_TOPUP)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, P_TOPUP)
    s = at(s, e.MeterValue(SID, "m", 21_000), 30, P_TOPUP)
    s = at(s, e.MeterValue(SID, "m2", 25_000), 31, P_TOPUP)
    assert s.state is State.STOPPING and s.topup_minor
    s = at(s, res("topup", Outcome.UNKNOWN, None, None, for_ref="7"), 32, P_TOPUP)
    assert s.topup_asked
    commands: tuple[c.Command, ...] = ()
    for _ in range(5):
        assert s.timer is not None, f"no deadline in {s.state}"
        minute = (s.timer[1] - T0).total_seconds() / 60
        t = step(s, e.TimerFired(SID, f"t{minute}", s.timer[0]), minute, P_TOPUP)
        assert t.session is not None
        s, commands = t.session, t.commands
        if s.state is State.CAPTURING:
            break
    assert s.state is State.CAPTURING and s.holds[0].uncertain
    assert [x.ref for x in _captures(commands)] == ["7"]
    assert s.holds[0].target_minor == 1458 and s.bill.shortfall_minor == 0  # 25 kWh


def test_a_restart_during_the_enquiry_asks_again_and_its_answer_counts() -> None:
    """The daemon restarts while the enquiry is out (stored state: topup_asked): the session
    asks again (a new key, not deduplicated away) and the answer proves the top-up."""
    s = _asked(stop_wh=30_000)
    t = step(s, e.Resumed(SID, "resume"), 31.8, P_TOPUP)
    assert t.session is not None and t.session.topup_asked
    queries = [x for x in t.commands if isinstance(x, c.QueryOpenPreauths)]
    assert len(queries) == 1
    last = e.LastResult(approved=True, ref="7", amount_minor=1500, trace_no=12)
    s = _answer(t.session, last)
    assert s.authorized_minor == 3000 and s.holds[0].target_minor == 1726
    assert s.bill.shortfall_minor == 0 and not s.holds[0].uncertain


def test_a_second_restart_during_the_enquiry_still_ends_with_a_deadline() -> None:
    s = _asked(stop_wh=30_000)
    for n in range(3):
        t = step(s, e.Resumed(SID, f"resume{n}"), 31.8 + n / 10, P_TOPUP)
        assert t.session is not None
        s = t.session
    assert s.timer is not None and s.timer[0] is e.TimerKind.ANSWER
    minutes = (s.timer[1] - T0).total_seconds() / 60
    s = at(s, e.TimerFired(SID, "ans", e.TimerKind.ANSWER), minutes, P_TOPUP)
    assert s.state is State.CAPTURING and s.holds[0].uncertain


@pytest.mark.parametrize(
    ("said", "held"),
    [
        (1500, 3000),  # the terminal reports the increment
        (3000, 3000),  # ... or the reservation's new total (topup_amount = "total")
        (1000, 2500),  # a smaller increment than asked
    ],
)
def test_the_proven_top_up_counts_what_the_terminal_holds(said: int, held: int) -> None:
    """The last result's amount read under both terminal conventions: never counted twice."""
    last = e.LastResult(approved=True, ref="7", amount_minor=said, trace_no=12)
    s = _answer(_asked(stop_wh=30_000), last)
    assert s.authorized_minor == held


@pytest.mark.parametrize("said", [4500, 6000, 3001])
def test_a_last_result_above_hold_plus_asked_is_never_held(said: int) -> None:
    """An amount that is neither the increment asked nor the hold plus it: nothing is added
    (a capture above what the terminal holds would be declined or booked as a new sale)."""
    last = e.LastResult(approved=True, ref="7", amount_minor=said, trace_no=12)
    s = _answer(_asked(stop_wh=30_000), last)
    assert s.authorized_minor == 1500 and s.holds[0].uncertain
    assert all(x <= 1500 for x in (h.target_minor or 0 for h in s.holds))


def test_a_nexo_hold_without_a_trace_number_is_asked_and_billed() -> None:
    """nexo gives no trace number: a last result cannot be told from the hold's own approval,
    so nothing is proven — the session still bills and ends (the hold booked by its amount)."""
    last = e.LastResult(approved=True, ref="7", amount_minor=1500, trace_no=None)
    s = _answer(_asked(first_trace=None, stop_wh=30_000), last)
    assert s.authorized_minor == 1500 and s.state is State.CAPTURING and s.holds[0].uncertain


def test_two_top_ups_lost_in_a_row() -> None:
    """The first lost top-up is proven by the enquiry (trace 12); the second is lost too and
    never reached the terminal: its last result is still trace 12, which proves nothing."""
    s = _answer(_asked(), e.LastResult(approved=True, ref="7", amount_minor=1500, trace_no=12))
    assert s.authorized_minor == 3000 and s.holds[0].topup_trace == 12
    assert s.state.value == State.CHARGING.value
    wh, minute = 21_000, 33
    while s.state.value != State.TOPPING_UP.value:
        wh, minute = wh + 1000, minute + 1
        s = at(s, e.MeterValue(SID, f"m{wh}", wh), minute, P_TOPUP)
    t = step(s, res("topup", Outcome.UNKNOWN, None, None, for_ref="7"), minute + 1, P_TOPUP)
    assert t.session is not None and t.session.topup_asked
    last = e.LastResult(approved=True, ref="7", amount_minor=1500, trace_no=12)
    s = at(t.session, e.OpenPreauthsReported(SID, "q2", ("7",), last=last), minute + 2, P_TOPUP)
    assert s.authorized_minor == 3000 and s.holds[0].uncertain and s.topup_refused


# ---- 2. ZVT display refs ------------------------------------------------------------------------


def _charged(ref_display: str | None) -> Session:
    """Hold 7 (as the driver prints it: ``ref_display``), 10 kWh, stopped: capturing."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7, ref_display=ref_display), 0)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1)
    s = at(s, e.MeterValue(SID, "m", 10_000), 30)
    s = at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=10_000), 31)
    assert s.state is State.CAPTURING
    return s


def test_a_nexo_ref_is_shown_as_it_came() -> None:
    """A nexo driver gives no display form: its ref (even one of digits) is never padded."""
    from gateway.ocpi.fac import fac_from_outcome
    from gateway.payments.moves import outcome_payload

    s = _charged(None)
    s = at(s, res("capture", Outcome.APPROVED, None, 42, for_ref="7"), 32)
    assert s.state is State.COMPLETED and s.ref_display == {}
    fac = fac_from_outcome({**outcome_payload(s), "authorization_reference": "AR"}, T0)
    assert fac is not None and "Receipt: 7" in (fac.eft_data or [])
    assert receipt_facts(s, T0, policy()).terminal_ref == "42"


def test_a_receipt_number_is_never_cut_to_four_digits() -> None:
    from drivers.zvt.refs import display_ref

    assert [display_ref(n) for n in (0, 42, 9999, 12345)] == ["0000", "0042", "9999", "12345"]


def test_a_capture_confirmed_by_the_last_result_shows_the_slips_receipt_number() -> None:
    """A capture whose answer was lost, confirmed by the terminal's last result (receipt 43):
    the receipt printed 'terminal receipt 43' where the slip says 0043 (the last result had no
    display form). Fixed: LastResult carries the driver's ``ref_display``
    (terminal_calls.last_result) and the booking records it (lost_settlement.py)."""
    s = _charged("0007")
    t = step(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 32)
    assert t.session is not None
    target = t.session.holds[0].target_minor
    last = e.LastResult(approved=True, ref="43", amount_minor=target, ref_display="0043")
    s = at(t.session, e.OpenPreauthsReported(SID, "q", (), last=last), 33)
    assert s.holds[0].booking_ref == "43", s.notes
    assert receipt_facts(s, T0, policy()).terminal_ref == "0043"


def test_two_holds_keep_their_own_display_forms() -> None:
    """A top-up as a new reservation (receipt 8), both captured (30, 31): each ref keeps the
    form the driver gave, and the FAC names the first hold as its slip prints it."""
    from gateway.ocpi.fac import fac_from_outcome
    from gateway.payments.moves import outcome_payload

    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, P_TOPUP)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, ref_display="0007"), 0, P_TOPUP)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, P_TOPUP)
    s = at(s, e.MeterValue(SID, "m", 21_000), 30, P_TOPUP)
    top = res("topup", Outcome.APPROVED, 1500, 8, for_ref="7", ref_display="0008")
    s = at(s, top, 31, P_TOPUP)
    s = at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=30_000), 40, P_TOPUP)
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7", ref_display="0030"), 41)
    s = at(s, res("capture", Outcome.APPROVED, 226, 31, for_ref="8", ref_display="0031"), 42)
    assert s.state is State.COMPLETED
    assert s.ref_display == {"7": "0007", "8": "0008", "30": "0030", "31": "0031"}
    fac = fac_from_outcome({**outcome_payload(s), "authorization_reference": "AR"}, T0)
    assert fac is not None and "Receipt: 0007" in (fac.eft_data or [])
    assert receipt_facts(s, T0, policy()).terminal_ref == "0030"


async def test_the_terminals_last_result_carries_the_slips_receipt_number(rig: Rig) -> None:
    """Over a real pty/TCP to the ZVT simulator: 06 20's repeat of a pre-auth, as the engine
    takes it (terminal_calls.last_result), names the receipt as the slip prints it."""
    from drivers.money import Money
    from gateway.runtime.terminal_calls import last_result

    t = rig.make_driver(incremental=True)
    await t.connect()
    pre = await t.preauthorize(Money(1000, "EUR"), "AT-1")
    assert pre.approved and pre.ref is not None and pre.ref_display == f"{int(pre.ref):04d}"
    last = await last_result(t)
    assert last is not None and last.ref == pre.ref and last.ref_display == pre.ref_display


def test_a_last_result_whose_receipt_another_session_knows_proves_no_top_up(
    tmp_path: Path,
) -> None:
    """The terminal restarted its receipt numbers (end of day): yesterday's session on the same
    terminal also had hold 7. The last result 'hold 7 approved, trace 50' may be that one's:
    the host drops it as evidence (``last_result_owner.ambiguous``), the top-up is not counted."""
    clock = Clock()
    store = Store.open(tmp_path / "a.sqlite3", clock=clock)
    host = EngineHost(store, P_TOPUP, clock)
    try:
        host.handle(e.CardPresented("old", "card", "E2", "T1", "EUR"))
        host.handle(res("preauthorize", Outcome.APPROVED, 1500, 7, sid="old", trace_no=5))
        host.handle(e.ChargerStarted("old", "st", 0))
        clock.advance(600)
        host.handle(e.ChargerStopped(session_id="old", event_id="sp", meter_wh=2000))
        host.handle(res("capture", Outcome.APPROVED, None, 8, sid="old", for_ref="7"))
        old = host.load("old")
        assert old is not None and old.state is State.COMPLETED
        clock.advance(3600)
        host.handle(e.CardPresented(SID, "card", "E1", "T1", "EUR"))
        host.handle(res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=49))
        host.handle(e.ChargerStarted(SID, "st", 0))
        clock.advance(1800)
        host.handle(e.MeterValue(SID, "m", 21_000))
        s = host.load(SID)
        assert s is not None and s.state is State.TOPPING_UP
        lost = host.handle(res("topup", Outcome.UNKNOWN, None, None, for_ref="7"))
        assert any(isinstance(x, c.QueryOpenPreauths) for x in lost.commands)
        clock.advance(5)
        last = e.LastResult(approved=True, ref="7", amount_minor=1500, trace_no=50)
        s = host.handle(e.OpenPreauthsReported(SID, "q", ("7",), last=last)).session
        assert s is not None and s.authorized_minor == 1500 and s.holds[0].uncertain
    finally:
        store.close()


def test_a_restart_during_the_enquiry_from_the_stored_row(tmp_path: Path) -> None:
    """The daemon dies while the enquiry is out; a new host on the same SQLite file resumes the
    session from its stored row (topup_asked, the top-up still out): it asks again, and with no
    answer it bills at the answer timeout — never left without a next action."""
    clock = Clock()
    path = tmp_path / "a.sqlite3"
    store = Store.open(path, clock=clock)
    host = EngineHost(store, P_TOPUP, clock)
    host.handle(e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    host.handle(res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=11))
    host.handle(e.ChargerStarted(SID, "st", 0))
    clock.advance(1800)
    host.handle(e.MeterValue(SID, "m", 21_000))
    host.handle(res("topup", Outcome.UNKNOWN, None, None, for_ref="7"))
    host.handle(e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=30_000))
    store.close()  # the crash: nothing more reaches this host
    clock.advance(30)
    store = Store.open(path, clock=clock)
    try:
        host = EngineHost(store, P_TOPUP, clock)
        s = host.load(SID)
        assert s is not None and s.topup_asked and s.state is State.TOPPING_UP
        resumed = host.handle(e.Resumed(SID, "resume"))
        assert [type(x).__name__ for x in resumed.commands] == ["QueryOpenPreauths"]
        s = resumed.session
        assert s is not None and s.timer is not None and s.timer[0] is e.TimerKind.ANSWER
        clock.now = s.timer[1]
        done = host.handle(e.TimerFired(SID, "answer", e.TimerKind.ANSWER))
        assert done.session is not None and done.session.state is State.CAPTURING
        assert [x.ref for x in done.commands if isinstance(x, c.Capture)] == ["7"]
    finally:
        store.close()


def test_a_refunds_report_names_its_receipt_as_the_slip_prints_it() -> None:
    """The refund report to the CPO (DEEVPrecon ``session.refund``) named the refund's ZVT
    receipt as "55" while the FAC and our receipt now print the slip's 0042 form: a CPO matching
    the refund slip found another number. Fixed: the payload carries ``ref_display`` beside the
    opaque ``ref`` (corrections.py)."""
    s = _charged("0007")
    s = at(s, res("capture", Outcome.APPROVED, None, 42, for_ref="7", ref_display="0042"), 32)
    ask = e.RefundRequested(session_id=SID, event_id="goodwill", amount_minor=100, reason="x")
    t = step(s, ask, 40)
    assert t.session is not None
    (refund,) = [x for x in t.commands if isinstance(x, c.RefundPayment)]
    op = "reversal" if refund.method == "reversal" else "refund"
    done = step(t.session, res(op, Outcome.APPROVED, 100, 55, ref_display="0055"), 41)
    (message,) = [x for x in done.commands if isinstance(x, c.Enqueue)]
    assert message.payload["ref"] == "55" and message.payload.get("ref_display") == "0055"
