"""The session state machine, row by row of its table (pure: no store, no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from drivers.base import Outcome
from gateway.fiscal.profiles import PROFILES
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.record import from_json, to_json
from gateway.payments.session import FINAL, Session, State, Transition, transition
from tests.payments.fixtures import T0, policy

P = policy()
P_TOPUP = policy("incremental", topup_terminals=frozenset({"T1"}))
P_HR = policy(
    fiscal=PROFILES["HR"]
)  # a receipt waits for the CPO's signature: the receipting state
SID = "s1"


def step(s: Session | None, ev: e.Event, minutes: float = 0) -> Transition:
    return transition(s, ev, T0 + timedelta(minutes=minutes), P)


def result(
    op: str, outcome: Outcome, amount: int | None = None, receipt: int | None = 7, n: str = "r"
) -> e.Event:
    return e.TerminalResultArrived(
        session_id=SID,
        event_id=n,
        operation=e.Operation(op),
        outcome=outcome,
        amount_minor=amount,
        ref=None if receipt is None else str(receipt),
    )


def authorizing() -> Session:
    t = step(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    assert t.session is not None
    return t.session


def authorized() -> Session:
    t = step(authorizing(), result("preauthorize", Outcome.APPROVED, 5000))
    assert t.session is not None
    return t.session


def charging(meter_wh: int = 1000) -> Session:
    t = step(authorized(), e.ChargerStarted(SID, "st", meter_wh), 1)
    assert t.session is not None
    return t.session


def kinds(t: Transition) -> list[str]:
    return [type(x).__name__ for x in t.commands]


def test_card_presented_asks_for_the_fixed_hold() -> None:
    t = step(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    assert t.session is not None and t.session.state is State.AUTHORIZING
    (cmd,) = t.commands
    assert isinstance(cmd, c.Preauthorize) and cmd.amount_minor == 5000 and cmd.terminal == "T1"


def test_approval_authorizes_the_charger_with_a_cap_and_arms_the_start_timer() -> None:
    t = step(authorizing(), result("preauthorize", Outcome.APPROVED, 5000))
    s = t.session
    assert (
        s is not None and s.state is State.AUTHORIZED and s.reference == "EVP-s1" and s.ref == "7"
    )
    (cmd,) = t.commands
    assert (
        isinstance(cmd, c.AuthorizeCharger) and cmd.max_cost_minor == 5000 - P.safety_margin_minor
    )
    assert s.timer == ("start", T0 + P.start_timeout)


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (Outcome.DECLINED, State.DECLINED),
        (Outcome.ABORTED, State.DECLINED),
        (Outcome.BUSY, State.FAILED),
        (Outcome.ERROR, State.FAILED),
    ],
)
def test_refused_preauth_ends_with_one_outcome_message(outcome: Outcome, state: State) -> None:
    t = step(authorizing(), result("preauthorize", outcome, receipt=None))
    assert t.session is not None and t.session.state is state and kinds(t) == ["Enqueue"]
    assert t.session.authorized_minor == 0


def test_partial_approval_below_minimum_is_released() -> None:
    t = step(authorizing(), result("preauthorize", Outcome.APPROVED, 100))
    assert t.session is not None and t.session.state is State.RELEASING and kinds(t) == ["Release"]


def test_partial_approval_above_minimum_caps_the_charge() -> None:
    t = step(authorizing(), result("preauthorize", Outcome.APPROVED, 3000))
    assert t.session is not None and t.session.authorized_minor == 3000
    cmd = t.commands[0]
    assert isinstance(cmd, c.AuthorizeCharger) and cmd.max_cost_minor == 2950


def test_lost_preauth_result_asks_the_terminal_and_releases_our_hold_found_by_its_data() -> None:
    t = step(authorizing(), result("preauthorize", Outcome.UNKNOWN, receipt=None))
    assert (
        t.session is not None
        and t.session.state is State.AUTH_UNKNOWN
        and kinds(t) == ["QueryOpenPreauths"]
    )
    ours = e.LastResult(approved=True, ref="9", amount_minor=5000)
    orphan = step(
        t.session, e.OpenPreauthsReported(SID, "q", ("3", "9"), orphans=("9",), last=ours)
    )
    assert (
        orphan.session is not None
        and orphan.session.state is State.RELEASING
        and orphan.session.ref == "9"
    )
    none = step(t.session, e.OpenPreauthsReported(SID, "q", ("3",), orphans=()))
    assert (
        none.session is not None
        and none.session.state is State.FAILED
        and kinds(none) == ["Enqueue"]
    )


def test_start_timeout_stops_and_releases() -> None:
    t = step(authorized(), e.TimerFired(SID, "t", e.TimerKind.START), 3)
    assert t.session is not None and t.session.state is State.RELEASING
    assert kinds(t) == ["StopCharger", "Release"]


def test_stale_or_early_timer_is_ignored() -> None:
    s = authorized()
    assert step(s, e.TimerFired(SID, "t", e.TimerKind.START), 1).session == s
    assert step(s, e.TimerFired(SID, "t", e.TimerKind.RETRY), 10).session == s


def test_meter_values_price_the_session_and_out_of_order_ones_are_ignored() -> None:
    s = charging()
    t = step(s, e.MeterValue(SID, "m1", 3000), 10)
    assert (
        t.session is not None and t.session.bill.price_minor == 226
    )  # 1.00 flat + 2 kWh * 0.45, +19 %
    older = step(t.session, e.MeterValue(SID, "m0", 2000), 11)
    assert (
        older.session is not None and older.session.metering.readings == t.session.metering.readings
    )
    assert older.session.bill.price_minor == 226 and "goes backwards" in older.note  # a discrepancy


def test_cost_reaching_the_cap_stops_the_charger_first() -> None:
    s = charging()
    t = step(s, e.MeterValue(SID, "m", 1000 + 100_000), 60)
    assert (
        t.session is not None and t.session.state is State.STOPPING and kinds(t) == ["StopCharger"]
    )
    stopped = step(
        t.session, e.ChargerStopped(session_id=SID, event_id="x", meter_wh=1000 + 101_000), 61
    )
    cap = stopped.commands[0]
    assert isinstance(cap, c.Capture) and cap.amount_minor == 5000  # never above the hold


def test_stop_then_capture_then_completed_with_release_of_the_rest() -> None:
    s: Session | None = charging()
    s = step(s, e.MeterValue(SID, "m1", 6000), 30).session
    t = step(
        s,
        e.ChargerStopped(
            session_id=SID, event_id="stop", meter_wh=11_000, session_energy_wh=10_000
        ),
        60,
    )
    assert t.session is not None and t.session.state is State.CAPTURING
    (cap,) = t.commands
    assert isinstance(cap, c.Capture) and cap.amount_minor == t.session.bill.price_minor == 655
    done = step(t.session, result("capture", Outcome.APPROVED, 655), 61)
    d = done.session
    assert (
        d is not None
        and d.state is State.COMPLETED
        and (d.captured_minor, d.released_minor) == (655, 4345)
    )
    assert kinds(done) == ["Enqueue"]


def test_zero_energy_releases_everything() -> None:
    p0 = policy(tariffs={})
    s = transition(
        charging(),
        e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=1000),
        T0 + timedelta(minutes=5),
        p0,
    ).session
    assert s is not None and s.state is State.RELEASING


def test_energy_disagreement_is_recorded_and_the_meter_wins() -> None:
    t = step(
        charging(),
        e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=11_000, session_energy_wh=9_000),
        60,
    )
    assert t.session is not None and t.session.metering.billed_energy_wh == 10_000
    assert any("disagreement" in n for n in t.session.notes)


def test_fault_bills_the_last_trusted_reading() -> None:
    s = step(charging(), e.MeterValue(SID, "m1", 4000), 20).session
    s = step(s, e.MeterValue(SID, "m2", 6000, trusted=False), 30).session
    t = step(s, e.ChargerFaulted(SID, "f", "link lost"), 31)
    assert t.session is not None and t.session.metering.billed_energy_wh == 3000
    assert kinds(t) == ["StopCharger", "Capture"]


def test_failed_capture_asks_then_retries_with_backoff_then_gives_up_owing_the_price() -> None:
    s = step(
        charging(), e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=5000), 60
    ).session
    failed = step(s, result("capture", Outcome.ERROR), 61)
    assert failed.session is not None and failed.session.state is State.CAPTURE_UNKNOWN
    still_open = step(failed.session, e.OpenPreauthsReported(SID, "q", ("7",)), 62)
    r = still_open.session
    assert r is not None and r.state is State.CAPTURE_RETRY and r.timer is not None
    again = step(r, e.TimerFired(SID, "t", e.TimerKind.RETRY), 63)
    assert (
        again.session is not None
        and again.session.state is State.CAPTURING
        and kinds(again) == ["Capture"]
    )
    late = replace(failed.session, expires_at=T0 + timedelta(minutes=62))
    gave_up = step(late, e.OpenPreauthsReported(SID, "q", ("7",)), 62)
    g = gave_up.session
    assert g is not None and g.state is State.CAPTURE_FAILED and g.captured_minor == 0
    assert (
        g.open_minor == g.authorized_minor and g.bill.owed_minor == g.bill.price_minor > 0
    )  # the debt is recorded


@pytest.mark.parametrize("outcome", [Outcome.BUSY, Outcome.ERROR])
def test_a_busy_terminal_does_not_push_the_retry_out(outcome: Outcome) -> None:
    """Found by the full crash run: a serial terminal answered "busy" (84 9C) while it finished
    a killed gateway's exchange, every busy answer doubled the backoff, and captures waited 30
    minutes. A busy terminal is there: the next try comes after the first interval again."""
    s = step(
        charging(), e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=5000), 60
    ).session
    assert s is not None
    s = replace(s, attempts=6)  # six silent rounds behind it: the backoff is at its 30-minute cap
    asked = step(s, result("capture", outcome), 61).session
    retry = step(asked, e.OpenPreauthsReported(SID, "q", ("7",)), 62).session
    assert retry is not None and retry.state is State.CAPTURE_RETRY and retry.timer is not None
    wait = retry.timer[1] - (T0 + timedelta(minutes=62))
    assert wait == (P.retry_initial if outcome is Outcome.BUSY else P.retry_max)


@pytest.mark.parametrize("busy", [True, False])
def test_an_enquiry_answered_busy_does_not_push_the_next_one_out(busy: bool) -> None:
    """The same for the enquiry: a terminal that answers busy (or one busy with another
    pre-auth, deferred by the host) is asked again after the first interval; silence backs off."""
    s = step(
        charging(), e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=5000), 60
    ).session
    asked = step(s, result("capture", Outcome.ERROR), 61).session
    assert asked is not None and asked.state is State.CAPTURE_UNKNOWN
    asked = replace(asked, attempts=6)
    again = step(asked, e.OpenPreauthsReported(SID, "q", (), failed=True, busy=busy), 62).session
    assert again is not None and again.state is State.CAPTURE_UNKNOWN and again.timer is not None
    wait = again.timer[1] - (T0 + timedelta(minutes=62))
    assert wait == (P.retry_initial if busy else P.retry_max)
    assert again.attempts == (1 if busy else 7)


@pytest.mark.parametrize(
    ("state", "expected", "command"),
    [
        (State.AUTHORIZING, State.AUTH_UNKNOWN, "QueryOpenPreauths"),
        (State.CAPTURING, State.CAPTURE_UNKNOWN, "QueryOpenPreauths"),
        (State.RELEASING, State.RELEASE_UNKNOWN, "QueryOpenPreauths"),
        (State.STOPPING, State.STOPPING, "StopCharger"),
    ],
)
def test_resume_after_a_crash_asks_instead_of_repeating(
    state: State, expected: State, command: str
) -> None:
    s = replace(charging(), state=state)
    t = step(s, e.Resumed(SID, "boot"), 5)
    assert t.session is not None and t.session.state is expected and kinds(t) == [command]


def completed() -> Session:
    s = step(
        charging(), e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=5000), 60
    ).session
    done = step(s, result("capture", Outcome.APPROVED), 61).session
    assert done is not None and done.state is State.COMPLETED
    return done


def test_final_sessions_ignore_everything_but_fiscal_data() -> None:
    s = completed()
    assert step(s, e.MeterValue(SID, "m", 9000), 9).session == s
    t = step(s, e.FiscalDataArrived(SID, "f", ("INV-1", "sig")), 9)
    assert (
        t.session is not None
        and t.session.invoice.fiscal == ("INV-1", "sig")
        and kinds(t) == ["ShowReceipt"]
    )


def test_hold_expiry_stops_in_time() -> None:
    s = charging()
    assert s.timer is not None and s.timer[0] == "expiry"
    t = transition(s, e.TimerFired(SID, "x", e.TimerKind.EXPIRY), s.timer[1], P)
    assert (
        t.session is not None
        and t.session.state is State.STOPPING
        and t.session.stop_reason == "hold validity ends soon"
    )


def test_every_state_is_reachable_and_every_open_state_has_a_way_out() -> None:
    """Walk the machine with a bounded set of events from a fresh session (the ledger and
    liveness checks run on every transition of the walk)."""
    last = (
        None,
        e.LastResult(approved=True, ref="9", amount_minor=5000),
        e.LastResult(approved=True, ref="11", amount_minor=4345),
        e.LastResult(approved=True, ref="11", amount_minor=0),
    )
    events = [
        result("preauthorize", o, 5000 if o is Outcome.APPROVED else None) for o in Outcome
    ] + [
        result("preauthorize", Outcome.APPROVED, 100, n="small"),
        result("preauthorize", Outcome.APPROVED, 5000, None),
        *(
            e.OpenPreauthsReported(SID, "q", r, orphans=o, last=x)
            for r, o in ((("9",), ("9",)), ((), ()), (("7",), ()))
            for x in last
        ),
        e.OpenPreauthsReported(SID, "qf", (), failed=True),
        e.ChargerStarted(SID, "st", 0),
        e.MeterValue(SID, "m", 200_000),
        e.MeterValue(SID, "m", 2_000),
        e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5_000),
        e.ChargerStopped(session_id=SID, event_id="sp0", meter_wh=0),
        e.ChargerFaulted(SID, "f", "x"),
        *(result(op, o, 100) for op in ("capture", "release") for o in Outcome),
        *(result("topup", o, 1500, 12) for o in Outcome),
        e.Resumed(SID, "b"),
        *(e.TimerFired(SID, "t", k) for k in e.TimerKind),
        e.FiscalDataArrived(SID, "fd", (), "INV-1", None, (("zki", "z"), ("jir", "j"))),
    ]
    seen: set[State] = set()
    for pol in (P, P_TOPUP, P_HR):
        visited: set[tuple[State, object, int]] = set()
        frontier = [
            transition(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), T0, pol).session
        ]
        while frontier:
            s = frontier.pop()
            assert s is not None
            if (s.state, s.expires_at, len(s.holds)) in visited:
                continue
            visited.add((s.state, s.expires_at, len(s.holds)))
            seen.add(s.state)
            for ev in events:
                for later in (
                    timedelta(0),
                    timedelta(hours=2),
                    timedelta(days=30),
                    timedelta(days=400),
                ):
                    nxt = transition(s, ev, T0 + later, pol).session
                    if (
                        nxt is not None
                        and (nxt.state, nxt.expires_at, len(nxt.holds)) not in visited
                    ):
                        frontier.append(nxt)
    assert set(State) - seen == set()
    assert seen >= FINAL


def test_json_round_trip() -> None:
    s = step(charging(), e.MeterValue(SID, "m1", 3000), 10).session
    assert s is not None and from_json(to_json(s)) == s


def test_a_capture_books_what_was_asked_and_an_odd_echo_is_a_discrepancy() -> None:
    s = step(
        charging(), e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=11_000), 60
    ).session
    assert s is not None and s.bill.price_minor == 655
    t = step(s, result("capture", Outcome.APPROVED, 600), 61)
    d = t.session
    assert (
        d is not None
        and d.state is State.COMPLETED
        and (d.captured_minor, d.released_minor) == (655, 4345)
    )
    assert d.discrepancies and "terminal answered 600" in d.discrepancies[0]


def test_a_tariff_change_mid_session_does_not_reprice_it() -> None:
    from decimal import Decimal

    from gateway.payments.tariff import Dimension, PriceComponent, Tariff, TariffElement

    s = step(charging(), e.MeterValue(SID, "m1", 3000), 10).session
    assert s is not None and s.tariff_id == "T1" and s.bill.price_minor == 226
    dearer = Tariff(
        "T2", "EUR", (TariffElement((PriceComponent(Dimension.ENERGY, Decimal("9.99"), None),)),)
    )
    changed = replace(P, tariffs={"*": dearer}, catalog={"T1": P.tariffs["*"], "T2": dearer})
    t = transition(s, e.MeterValue(SID, "m2", 4000), T0 + timedelta(minutes=20), changed)
    assert (
        t.session is not None and t.session.bill.price_minor == 280
    )  # still T1: 1.00 + 3 kWh * 0.45, +19 %


def test_fiscal_data_before_the_capture_is_printed_when_it_completes() -> None:
    s = step(
        charging(), e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=5000), 60
    ).session
    s = step(s, e.FiscalDataArrived(SID, "f", ("Invoice INV-9", "Signature S")), 61).session
    assert (
        s is not None
        and s.state is State.CAPTURING
        and s.invoice.fiscal == ("Invoice INV-9", "Signature S")
    )
    t = step(s, result("capture", Outcome.APPROVED), 62)
    assert kinds(t) == ["Enqueue", "ShowReceipt"]
    receipt = t.commands[1]
    assert isinstance(receipt, c.ShowReceipt) and receipt.lines == ("Invoice INV-9", "Signature S")
