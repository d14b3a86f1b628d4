"""Regressions for the money-correctness review (issue 8): each test names the scenario that
booked money never taken, dropped a debt or leaked a hold before the fix."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.base import Capabilities, Outcome
from gateway.errors import InvariantViolated
from gateway.ocpi.fac import fac_from_outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.preauth import Target
from gateway.payments.record import from_json, to_json
from gateway.payments.schemes import Validity, scheme_of
from gateway.payments.session import (
    HoldStatus,
    Policy,
    Session,
    State,
    outcome_payload,
    transition,
    violations,
)
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import T0, Clock, at, policy, step

P = policy()
SID = "s1"
MC = {"brand": "MasterCard", "aid": "A0000000041010", "masked_pan": "541333******0074"}


def res(
    op: str,
    outcome: Outcome,
    amount: int | None = None,
    receipt: int | None = 7,
    *,
    card: dict[str, str] | None = None,
    for_ref: str | None = None,
    trace_no: int | None = None,
    message: str = "",
) -> e.Event:
    return e.TerminalResultArrived(
        session_id=SID,
        event_id=f"{op}-{outcome}-{amount}",
        operation=e.Operation(op),
        outcome=outcome,
        amount_minor=amount,
        ref=None if receipt is None else str(receipt),
        message=message,
        card=card or {},
        for_ref=for_ref,
        trace_no=trace_no,
    )


def capturing(
    stop_meter: int = 11_000, pol: Policy = P, card: dict[str, str] | None = None
) -> Session:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, card=card or {}), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    return at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=stop_meter), 60, pol)


# ---- 0: captured and released amounts swapped --------------------------------------------------


@pytest.mark.parametrize("echo", [655, 4345, None], ids=["echo-booked", "echo-reversed", "no-echo"])
def test_capture_books_what_was_asked_whichever_amount_the_terminal_echoes(
    echo: int | None,
) -> None:
    s = capturing()
    assert s.state is State.CAPTURING and s.bill.price_minor == 655
    done = at(s, res("capture", Outcome.APPROVED, echo, 12), 61)
    assert done.state is State.COMPLETED and (done.captured_minor, done.released_minor) == (
        655,
        4345,
    )
    assert done.discrepancies == ()
    fac = fac_from_outcome(outcome_payload(done), T0)
    assert fac is not None and fac.total_costs.total == Decimal("6.55")


def test_an_echo_that_fits_neither_convention_is_a_discrepancy_not_a_booking() -> None:
    done = at(capturing(), res("capture", Outcome.APPROVED, 4823, 12), 61)
    assert done.captured_minor == 655 and "terminal answered 4823" in done.discrepancies[0]


# ---- 1: capture "confirmed" by absence ---------------------------------------------------------


def test_a_declined_capture_whose_receipt_vanished_is_unconfirmed_and_owed_not_completed() -> None:
    s = at(capturing(), res("capture", Outcome.DECLINED), 61)
    assert s.state is State.CAPTURE_UNKNOWN
    t = step(s, e.OpenPreauthsReported(SID, "q", ()), 62)
    u = t.session
    assert (
        u is not None
        and u.state is State.CAPTURE_UNCONFIRMED
        and u.captured_minor == 0
        and u.bill.owed_minor == 655
    )
    # owed, but never told upstream as FAILED while the terminal may have made it (issue 26):
    # the outcome waits for the end-of-day evidence (tests/payments/test_capture_evidence.py)
    assert t.commands == ()
    decided = step(
        u, e.CaptureEvidence(session_id=SID, event_id="eod", captured=False, evidence="eod"), 99
    )
    (out,) = decided.commands
    assert isinstance(out, c.Enqueue)
    fac = fac_from_outcome(out.payload, T0)
    assert (
        fac is not None
        and fac.capture_status_code == "FAILED"
        and "owed" in (fac.capture_status_message or "")
    )


@pytest.mark.parametrize("echo", [655, 4345])
def test_a_lost_capture_is_booked_on_the_terminals_repeat_of_its_last_result(echo: int) -> None:
    s = at(capturing(), res("capture", Outcome.UNKNOWN), 61)
    done = at(
        s,
        e.OpenPreauthsReported(
            SID, "q", (), last=e.LastResult(approved=True, ref="12", amount_minor=echo)
        ),
        62,
    )
    assert (
        done.state is State.COMPLETED
        and done.captured_minor == 655
        and done.holds[0].booking_ref == "12"
    )


def test_a_last_result_of_another_amount_is_no_evidence() -> None:
    s = at(capturing(), res("capture", Outcome.UNKNOWN), 61)
    u = at(
        s,
        e.OpenPreauthsReported(
            SID, "q", (), last=e.LastResult(approved=True, ref="12", amount_minor=1500)
        ),
        62,
    )
    assert u.state is State.CAPTURE_UNCONFIRMED and u.captured_minor == 0


# ---- 2: lost capture ended as FAILED -----------------------------------------------------------


def test_a_capture_lost_until_the_hold_lapses_is_owed_and_reported() -> None:
    s = at(capturing(), res("capture", Outcome.UNKNOWN), 61)
    s = replace(s, expires_at=T0 + timedelta(minutes=90))  # the hold lapses soon
    t = step(s, e.OpenPreauthsReported(SID, "q", (), failed=True), 62)
    u = t.session
    assert u is not None and u.state is State.CAPTURE_UNCONFIRMED and u.bill.owed_minor == 655
    assert u.holds[0].status is HoldStatus.UNCONFIRMED and u.open_minor == 5000
    assert t.commands == ()  # its outcome waits for the evidence (issue 26), the debt is listed


def test_a_release_lost_until_the_hold_lapses_says_so() -> None:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000))
    s = at(s, e.TimerFired(SID, "t", e.TimerKind.START), 4)
    s = at(s, res("release", Outcome.UNKNOWN), 5)
    s = replace(s, expires_at=T0 + timedelta(minutes=30))
    u = at(s, e.OpenPreauthsReported(SID, "q", (), failed=True), 6)
    assert (
        u.state is State.RELEASE_FAILED
        and u.holds[0].status is HoldStatus.LAPSED
        and u.released_minor == 0
    )


# ---- 3: approval without a receipt number ------------------------------------------------------


def test_an_approval_without_a_receipt_number_is_not_an_approval() -> None:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    t = step(s, res("preauthorize", Outcome.APPROVED, 5000, receipt=None))
    assert t.session is not None and t.session.state is State.AUTH_UNKNOWN
    assert [type(x).__name__ for x in t.commands] == ["QueryOpenPreauths"]  # not AuthorizeCharger


def test_a_state_that_cannot_be_settled_is_refused() -> None:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    assert "without a hold to settle" in " ".join(violations(replace(s, state=State.AUTHORIZED)))


# ---- 4: zero energy -----------------------------------------------------------------------------


def test_zero_energy_releases_the_whole_hold_despite_a_flat_fee() -> None:
    s = capturing(stop_meter=1000)  # the fixture tariff has a 1.00 EUR start fee
    assert (
        s.state is State.RELEASING and s.bill.price_minor == 0 and "nothing billed" in s.notes[-1]
    )


def test_zero_energy_bills_the_flat_fee_when_the_site_says_so() -> None:
    s = capturing(stop_meter=1000, pol=policy(bill_without_energy=True))
    assert s.state is State.CAPTURING and s.bill.price_minor == 119


# ---- 5: the sweep released a hold securing a debt ----------------------------------------------


def test_the_sweep_never_releases_the_hold_of_a_session_that_owes(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "s.sqlite3", clock=clock)
    host = EngineHost(store, P, clock)
    host.handle(e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    host.handle(res("preauthorize", Outcome.APPROVED, 5000, card=MC))
    host.handle(e.ChargerStarted(SID, "st", 0))
    clock.advance(3600)
    host.handle(e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=10_000))
    host.handle(res("capture", Outcome.ERROR))
    # Still open, but the retry comes too late: the capture gives up while the hold is valid.
    s = host.load(SID)
    assert s is not None and s.state is State.CAPTURE_UNKNOWN and s.expires_at is not None
    clock.now = s.expires_at - timedelta(minutes=30)
    host.handle(e.OpenPreauthsReported(SID, "q", ("7",)))
    s = host.load(SID)
    assert s is not None and s.state is State.CAPTURE_FAILED and s.bill.owed_minor > 0
    assert [r["id"] for r in store.sessions(owing=True)] == [SID]
    assert host.sweep("T1", ("7",), "EUR", "x") == []  # the receipt secures the debt


# ---- 6: one hold validity for every card -------------------------------------------------------


def test_hold_validity_follows_the_card_scheme_and_the_acquirer_profile() -> None:
    assert scheme_of(MC) == "mastercard" and scheme_of({"brand": "VISA"}) == "visa"
    assert scheme_of({"aid": "A0000000043060"}) == "maestro" and scheme_of({}) == "unknown"
    mc = at(
        at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR")),
        res("preauthorize", Outcome.APPROVED, 5000, card=MC),
    )
    assert mc.scheme == "mastercard" and mc.expires_at == T0 + timedelta(days=30)
    plain = at(
        at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR")),
        res("preauthorize", Outcome.APPROVED, 5000),
    )
    assert plain.expires_at == T0 + Validity().default  # unknown card: the conservative default
    acquirer = policy(validity=Validity(terminals={"T1": {"mastercard": timedelta(days=7)}}))
    s = at(
        at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, acquirer),
        res("preauthorize", Outcome.APPROVED, 5000, card=MC),
        0,
        acquirer,
    )
    assert s.expires_at == T0 + timedelta(days=7)
    charging = at(s, e.ChargerStarted(SID, "st", 0), 1, acquirer)
    assert charging.timer == (
        e.TimerKind.EXPIRY,
        T0 + timedelta(days=6),
    )  # stop a day before it lapses


# ---- 7: an ambiguous StartSession, energy after the release ------------------------------------


def test_energy_reported_after_the_hold_was_released_is_recorded_as_owed() -> None:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000))
    s = at(s, e.TimerFired(SID, "t", e.TimerKind.START), 4)
    voided = at(s, res("release", Outcome.APPROVED, 0, 13), 5)
    assert voided.state is State.VOIDED
    t = step(
        voided,
        e.ChargerStopped(
            session_id=SID,
            event_id="cdr",
            meter_wh=7_000,
            session_energy_wh=7_000,
            reason="CDR received",
        ),
        60,
    )
    u = t.session
    assert u is not None and u.bill.unpaid_energy_wh == 7_000 and u.bill.owed_minor > 0
    (out,) = t.commands
    assert isinstance(out, c.Enqueue) and out.message_id == f"{SID}:unpaid"
    fac = fac_from_outcome(out.payload, T0)
    assert fac is not None and fac.id == f"{SID}-U" and fac.capture_status_code == "FAILED"
    assert (
        step(
            u,
            e.ChargerStopped(
                session_id=SID, event_id="cdr2", meter_wh=7_000, session_energy_wh=7_000
            ),
            61,
        ).session
        == u
    )  # a second CDR: no second debt


# ---- 8: shortfall -------------------------------------------------------------------------------


def test_a_price_above_the_hold_captures_the_hold_and_records_the_shortfall() -> None:
    s = capturing(stop_meter=1000 + 120_000)
    assert s.bill.price_minor > 5000 and s.bill.shortfall_minor == s.bill.price_minor - 5000
    done = at(s, res("capture", Outcome.APPROVED, 5000, 12), 61)
    assert (
        done.state is State.COMPLETED
        and done.captured_minor == 5000
        and done.bill.owed_minor == s.bill.shortfall_minor
    )
    fac = fac_from_outcome(outcome_payload(done), T0)
    assert (
        fac is not None
        and fac.capture_status_code == "PARTIAL_SUCCESS"
        and "owed" in (fac.capture_status_message or "")
    )


# ---- 9: sessions that could get stuck ----------------------------------------------------------


def test_every_terminal_command_has_an_answer_deadline() -> None:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    assert s.timer == (e.TimerKind.ANSWER, T0 + P.answer_timeout)
    t = step(
        s, e.TimerFired(SID, "t", e.TimerKind.ANSWER), 7
    )  # no result ever came (unknown terminal, crash)
    assert (
        t.session is not None
        and t.session.state is State.AUTH_UNKNOWN
        and t.session.timer is not None
    )
    cap = capturing()
    assert cap.timer is not None and cap.timer[0] == e.TimerKind.ANSWER


def test_an_open_session_without_a_deadline_is_refused() -> None:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    assert "next action" in " ".join(violations(replace(s, timer=None)))
    with pytest.raises(
        InvariantViolated, match="armed in"
    ):  # a timer that would do nothing is a bug, not a no-op
        transition(
            replace(s, timer=(e.TimerKind.RETRY, T0)),
            e.TimerFired(SID, "t", e.TimerKind.RETRY),
            T0,
            P,
        )


def test_two_lost_preauths_adopt_only_the_hold_whose_data_fits(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "a.sqlite3", clock=clock)
    host = EngineHost(store, policy("target"), clock)
    host.handle(e.CardPresented("a", "card", "E1", "T1", "EUR", Target(amount_minor=2000)))
    host.handle(e.CardPresented("b", "card", "E2", "T1", "EUR", Target(amount_minor=9000)))
    for sid in ("a", "b"):
        host.handle(e.Resumed(sid, "boot"))  # both results lost in a restart
    # The terminal holds 21 (b's, 99.00) and 20 (a's, 22.00); its last result is b's.
    last = e.LastResult(approved=True, ref="21", amount_minor=9900)
    host.handle(e.OpenPreauthsReported("a", "qa", ("20", "21"), last=last))
    host.handle(e.OpenPreauthsReported("b", "qb", ("20", "21"), last=last))
    a, b = host.load("a"), host.load("b")
    assert (
        a is not None and a.state is State.FAILED
    )  # 99.00 is more than a ever asked for: not adopted
    assert (
        b is not None
        and b.state is State.RELEASING
        and b.ref == "21"
        and b.authorized_minor == 9900
    )
    assert host.sweep("T1", ("20", "21"), "EUR", "x")  # a's hold stays for the sweep, b's is owned
    assert all(
        cmd.ref == "20"
        for cmd in host.sweep("T1", ("20", "21"), "EUR", "y")
        if isinstance(cmd, c.Release)
    )


def test_a_lost_preauth_that_cannot_be_attributed_releases_the_orphan_at_once(
    tmp_path: Path,
) -> None:
    """Found by the unplug campaign: the line cut just before the pre-auth's result, the terminal's
    last result says nothing of the new hold, so the session fails without it; the hold stayed
    open on the driver's card until the next periodic sweep (ten minutes, or never on a busy
    terminal). Now it is released at once, as an orphan session of its own."""
    clock = Clock()
    store = Store.open(tmp_path / "a.sqlite3", clock=clock)
    host = EngineHost(store, policy(), clock)
    host.handle(e.CardPresented("a", "card", "E1", "T1", "EUR"))
    host.handle(e.Resumed("a", "boot"))
    handled = host.handle(
        e.OpenPreauthsReported(
            "a", "qa", ("20",), last=e.LastResult(approved=True, ref="19", amount_minor=5000)
        )
    )
    assert handled.session is not None and handled.session.state is State.FAILED
    (release,) = handled.commands
    assert isinstance(release, c.Release) and release.ref == "20"
    orphan = host.load(release.session_id)
    assert orphan is not None and orphan.ref == "20" and not orphan.final
    assert (
        host.sweep("T1", ("20",), "EUR", "later") == []
    )  # owned now: the periodic sweep leaves it


# ---- a result stored before it was acknowledged (found by the crash campaign) -----------------


def held(op: str, amount: int, receipt: int, for_ref: str | None = None) -> e.Event:
    return e.TerminalResultArrived(
        session_id=SID,
        event_id=f"{op}-held",
        operation=e.Operation(op),
        outcome=Outcome.APPROVED,
        amount_minor=amount,
        ref=str(receipt),
        for_ref=for_ref,
        provisional=True,
    )


def test_a_capture_stored_but_never_acknowledged_is_not_booked() -> None:
    """The crash campaign killed the daemon between storing the capture's result and the 80 00
    that acknowledges it: the terminal reversed the capture (ZVT 2.2.8), its sweep later released
    the hold, and the store said 2.98 EUR captured and sent the FAC. Now the stored result is
    evidence only: after the restart the terminal is asked, and a hold still open means the
    capture did not stand."""
    s = capturing()
    s = at(s, held("capture", 655, 12, for_ref="7"), 61)
    assert s.state is State.CAPTURING and s.captured_minor == 0 and s.held_result is not None
    s = at(s, e.Resumed(SID, "boot"), 62)
    assert s.state is State.CAPTURE_UNKNOWN
    t = step(s, e.OpenPreauthsReported(SID, "q", ("7",)), 62)  # the terminal holds it again
    assert (
        t.session is not None
        and t.session.state is State.CAPTURE_RETRY
        and t.session.captured_minor == 0
    )
    assert t.session.held_result is None  # used up: the retry's own result decides


def test_a_capture_stored_before_a_crash_stands_when_the_hold_is_gone() -> None:
    """The same, but the acknowledgement did reach the terminal: the hold is gone and the
    terminal's last result is someone else's; our stored result is the evidence."""
    s = at(capturing(), held("capture", 655, 12, for_ref="7"), 61)
    s = at(
        at(s, e.Resumed(SID, "boot"), 62),
        e.OpenPreauthsReported(
            SID, "q", (), last=e.LastResult(approved=True, ref="40", amount_minor=99)
        ),
        62,
    )
    assert s.state is State.COMPLETED and s.captured_minor == 655 and s.holds[0].booking_ref == "12"


def test_a_completion_stored_before_a_crash_stands_though_it_names_the_hold_itself() -> None:
    """Found by the crash campaign on nexo (180 captures left unconfirmed in 500 kills): a nexo
    Completion is named by the reservation's own POI transaction, the hold's reference, and
    the rule that a last result naming the hold itself is its pre-auth (ZVT's receipts) threw
    our own stored approval away. Our stored approval of this capture is the evidence, however
    the driver names it."""
    s = at(capturing(), held("capture", 655, 7, for_ref="7"), 61)
    s = at(at(s, e.Resumed(SID, "boot"), 62), e.OpenPreauthsReported(SID, "q", ()), 62)
    assert s.state is State.COMPLETED and s.captured_minor == 655 and s.holds[0].booking_ref == "7"


def test_a_last_result_naming_the_hold_itself_is_still_no_capture() -> None:
    """Without a stored approval, the terminal repeating a result under the hold's own
    reference (its pre-auth) proves no capture: unconfirmed, owed visibly."""
    s = at(capturing(), e.Resumed(SID, "boot"), 62)
    last = e.LastResult(approved=True, ref="7", amount_minor=655)
    s = at(s, e.OpenPreauthsReported(SID, "q", (), last=last), 62)
    assert s.state is State.CAPTURE_UNCONFIRMED and s.captured_minor == 0


@pytest.mark.parametrize("still_open", [True, False])
def test_a_preauth_stored_before_a_crash_is_ours_only_if_still_open(still_open: bool) -> None:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    s = at(s, held("preauthorize", 5000, 7))
    assert s.state is State.AUTHORIZING and s.holds == ()  # the charger is not told to start yet
    s = at(s, e.Resumed(SID, "boot"), 1)
    t = step(
        s,
        e.OpenPreauthsReported(
            SID, "q", ("7",) if still_open else (), orphans=("7",) if still_open else ()
        ),
        1,
    )
    assert t.session is not None
    if still_open:  # ours, proven by its own result: given back (the EV was never authorised)
        (release,) = t.commands
        assert t.session.state is State.RELEASING
        assert isinstance(release, c.Release) and release.ref == "7"
    else:  # reversed by the terminal for want of our acknowledgement: nothing to give back
        assert t.session.state is State.FAILED and not any(
            isinstance(x, c.Release) for x in t.commands
        )
        assert "reversed" in t.session.notes[-1]


# ---- incremental holds -------------------------------------------------------------------------


def _incremental(new_receipt: bool) -> Session:
    pol = policy("incremental", topup_terminals=frozenset({"T1"}))
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=70), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, pol)
    t = step(
        s, e.MeterValue(SID, "m", 21_000), 30, pol
    )  # (1.00 + 21 kWh * 0.45) * 1.19 = 12.44: 80 % of the hold
    assert t.session is not None and t.session.state is State.TOPPING_UP
    (top,) = t.commands
    assert isinstance(top, c.TopUp) and top.trace_no == 70 and top.amount_minor == 1500
    s = at(
        t.session,
        res("topup", Outcome.APPROVED, 1500, 8 if new_receipt else 7, for_ref="7"),
        31,
        pol,
    )
    return at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=30_000), 60, pol)


def test_incremental_top_up_as_a_second_hold_is_captured_across_both() -> None:
    s = _incremental(new_receipt=True)
    assert [h.ref for h in s.holds] == ["7", "8"] and s.authorized_minor == 3000
    assert (
        s.state is State.CAPTURING and s.bill.price_minor == 1726
    )  # (1.00 + 30 kWh * 0.45) * 1.19
    assert [h.target_minor for h in s.holds] == [1500, 226]


def test_incremental_top_up_into_the_same_receipt_increases_that_hold() -> None:
    s = _incremental(new_receipt=False)
    assert [(h.ref, h.amount_minor) for h in s.holds] == [("7", 3000)]


def test_incremental_settles_each_hold_then_completes() -> None:
    pol = policy("incremental", topup_terminals=frozenset({"T1"}))
    s = _incremental(new_receipt=True)
    s = replace(
        s,
        holds=(replace(s.holds[0], target_minor=1500), replace(s.holds[1], target_minor=300)),
        bill=replace(s.bill, price_minor=1800),
    )
    t = step(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, pol)
    assert t.session is not None and t.session.state is State.CAPTURING
    (nxt,) = t.commands
    assert isinstance(nxt, c.Capture) and (nxt.ref, nxt.held_minor, nxt.amount_minor) == (
        "8",
        1500,
        300,
    )
    done = at(t.session, res("capture", Outcome.APPROVED, 1200, 31, for_ref="8"), 62, pol)
    assert done.state is State.COMPLETED and (done.captured_minor, done.released_minor) == (
        1800,
        1200,
    )


@pytest.mark.parametrize("new_receipt", [True, False])
def test_a_top_up_stored_but_never_acknowledged_does_not_raise_the_cap(new_receipt: bool) -> None:
    """The daemon stored the top-up's approval and died before its 80 00: the terminal may have
    reversed it (ZVT 2.2.8), so after the restart the charge goes on to the old cap only (a
    second hold that did stand is no session's and the terminal sweep releases it)."""
    pol = policy("incremental", topup_terminals=frozenset({"T1"}))
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=70), 0, pol)
    s = at(at(s, e.ChargerStarted(SID, "st", 0), 1, pol), e.MeterValue(SID, "m", 21_000), 30, pol)
    s = at(s, held("topup", 1500, 8 if new_receipt else 7, for_ref="7"), 31, pol)
    assert s.state is State.TOPPING_UP and s.authorized_minor == 1500 and s.held_result is not None
    s = at(s, e.Resumed(SID, "boot"), 32, pol)
    assert s.state is State.CHARGING and s.held_result is None and s.topup_refused
    assert [(h.ref, h.amount_minor) for h in s.holds] == [
        ("7", 1500)
    ] and "never acknowledged" in s.notes[-1]
    assert at(s, e.MeterValue(SID, "m2", 25_000), 33, pol).state is State.STOPPING  # at the old cap


def test_the_second_hold_of_a_lost_top_up_is_left_to_the_sweep(tmp_path: Path) -> None:
    """While the top-up is out, its new hold would look like an orphan: the terminal is not
    swept (the worker tries again in SWEEP_RETRY_S, not SWEEP_EVERY_S). Once its fate is given
    up, a hold the terminal made for it belongs to no session and is released."""
    clock = Clock()
    store = Store.open(tmp_path / "a.sqlite3", clock=clock)
    pol = policy("incremental", topup_terminals=frozenset({"T1"}))
    host = EngineHost(store, pol, clock)
    host.handle(e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    host.handle(res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=70))
    host.handle(e.ChargerStarted(SID, "st", 0))
    clock.advance(30 * 60)
    assert isinstance(host.handle(e.MeterValue(SID, "m", 21_000)).commands[0], c.TopUp)
    host.handle(held("topup", 1500, 8, for_ref="7"))
    assert host.making_holds("T1") and host.sweep("T1", ("7", "8"), "EUR", "x") == []
    host.handle(e.Resumed(SID, "boot"))
    assert not host.making_holds("T1")
    (release,) = [
        cmd for cmd in host.sweep("T1", ("7", "8"), "EUR", "y") if isinstance(cmd, c.Release)
    ]
    assert release.ref == "8"


@pytest.mark.parametrize("how", ["restart", "timeout"])
def test_the_hold_of_a_lost_top_up_is_captured_by_booking_its_amount(how: str) -> None:
    """Had the terminal raised the first hold after all, a partial reversal of "what we hold
    minus the price" would book the top-up too: the capture books the price itself (06 24)."""
    pol = policy("incremental", topup_terminals=frozenset({"T1"}))
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=70), 0, pol)
    s = at(at(s, e.ChargerStarted(SID, "st", 0), 1, pol), e.MeterValue(SID, "m", 21_000), 30, pol)
    if how == "restart":
        s = at(at(s, held("topup", 1500, 7, for_ref="7"), 31, pol), e.Resumed(SID, "boot"), 32, pol)
    else:
        assert s.timer is not None
        s = at(s, e.TimerFired(SID, "t", s.timer[0]), 37, pol)  # the answer timeout (6 min)
        assert s.topup_asked  # the terminal is asked; no answer to that either:
        s = at(s, e.TimerFired(SID, "t2", e.TimerKind.ANSWER), 43, pol)
    assert s.state is State.CHARGING and s.holds[0].uncertain and s.authorized_minor == 1500
    t = step(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=22_000), 40, pol)
    (cap,) = [x for x in t.commands if isinstance(x, c.Capture)]
    assert cap.exact and (cap.held_minor, cap.amount_minor) == (
        1500,
        t.session.bill.price_minor if t.session else 0,
    )
    assert (
        t.session is not None and from_json(to_json(t.session)).holds[0].uncertain
    )  # kept in the store's record


def test_a_top_up_acknowledged_after_it_was_stored_raises_the_cap() -> None:
    pol = policy("incremental", topup_terminals=frozenset({"T1"}))
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=70), 0, pol)
    s = at(at(s, e.ChargerStarted(SID, "st", 0), 1, pol), e.MeterValue(SID, "m", 21_000), 30, pol)
    s = at(
        at(s, held("topup", 1500, 8, for_ref="7"), 31, pol),
        res("topup", Outcome.APPROVED, 1500, 8, for_ref="7"),
        31,
        pol,
    )
    assert s.state is State.CHARGING and s.authorized_minor == 3000 and s.held_result is None


def test_a_terminal_that_cannot_top_up_holds_the_cap_and_says_so() -> None:
    """An incremental policy on a terminal without top-ups (a policy built without the config
    check, or a site default the terminal was never checked against): the session holds the
    cap at once (``strategy_choice``), not the small first hold that every refused top-up
    would have stopped the charge at."""
    pol = policy("incremental")
    t = step(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    assert t.session is not None and "cannot add to a hold" in t.session.notes[0]
    (cmd,) = [x for x in t.commands if isinstance(x, c.Preauthorize)]
    assert cmd.amount_minor == pol.hold.max_minor == 15000
    s = at(t.session, res("preauthorize", Outcome.APPROVED, 15000), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, pol)
    s = at(s, e.MeterValue(SID, "m", 25_000), 30, pol)
    assert s.state is State.CHARGING  # 14.58 of 15.00 - 0.50: no top-up, not yet the cap


def test_a_terminal_that_cannot_release_an_open_hold_is_never_asked_to() -> None:
    """A POI that refuses the Reversal of an uncompleted reservation (release_open = false):
    a session that owes nothing sends no Release; its hold is left to lapse, visibly."""
    caps = {"T1": Capabilities(release_open=False)}
    pol = policy("fixed", capabilities=caps)
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    t = step(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=1000), 60, pol)
    assert not [x for x in t.commands if isinstance(x, c.Release)], t.commands
    assert t.session is not None and t.session.final and t.session.holds[0].status.value == "lapsed"
    assert "left to lapse" in " ".join(t.session.notes)
    with_release = policy("fixed")  # the same session on a terminal that can release
    s2 = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, with_release)
    s2 = at(s2, res("preauthorize", Outcome.APPROVED, 5000), 0, with_release)
    s2 = at(s2, e.ChargerStarted(SID, "st", 1000), 1, with_release)
    stop = e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=1000)
    assert [x for x in step(s2, stop, 60, with_release).commands if isinstance(x, c.Release)]


def test_an_authorisation_lost_in_a_restart_is_said_again() -> None:
    """Found by the crash campaign (a kill just after a hold's approval): the session was stored
    authorized, the process died before the charger heard it, and the EV waited for the start
    timeout (3 minutes) to have its hold released. After a restart the charger is told again,
    the same command marked as a repeat (our MQTT contract sends it with the first one's message
    id, so a charger that heard the first takes it once; OCPI and EVerest links do not repeat)."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
    first = step(s, res("preauthorize", Outcome.APPROVED, 5000, 7), 0)
    assert first.session is not None and first.session.state is State.AUTHORIZED
    again = step(first.session, e.Resumed(SID, "boot"), 1)
    authorize = first.commands[0]
    assert isinstance(authorize, c.AuthorizeCharger)
    assert again.commands == (replace(authorize, repeat=True),)
    assert (
        again.session is not None and again.session.timer == first.session.timer
    )  # the same deadline


def test_a_route_that_tops_up_tops_up_on_a_site_that_does_not() -> None:
    """Found by the crash campaign's top-up EVSEs: a route whose acquirer profile says
    "incremental" on a site whose default is a fixed hold took the small first hold, but the
    top-up looked at the site's policy, so it never came and the charge stopped at the cap."""
    site = policy("fixed", topup_terminals=frozenset({"T1"}))
    pol = replace(site, route_holds={"topup": policy("incremental").hold})
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR", route="topup"), 0, pol)
    assert s.hold_minor == 1500 and s.route == "topup"
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=70), 0, pol)
    s = from_json(
        to_json(at(s, e.ChargerStarted(SID, "st", 0), 1, pol))
    )  # the route survives a restart
    t = step(s, e.MeterValue(SID, "m", 21_000), 30, pol)
    assert (
        t.session is not None
        and t.session.state is State.TOPPING_UP
        and isinstance(t.commands[0], c.TopUp)
    )


def test_a_charge_that_stops_while_its_top_up_is_out_books_the_price_not_the_top_up() -> None:
    """Found by the crash campaign (no kill needed): the EV stopped while the top-up was at the
    terminal. The capture left with the old hold (15.00) and released "15.00 less the price";
    the terminal, which had raised the hold to 30.00 meanwhile, booked the price plus the
    top-up. Now the bill waits for the top-up's answer (the reference model's "late top-up")
    and books the price from the raised hold; a top-up that never answers leaves the hold
    uncertain, captured by booking the price itself (06 24,
    ``test_reference_findings.test_a_top_up_lost_after_the_stop_is_billed_when_its_answer_times_out``)."""
    pol = policy("incremental", topup_terminals=frozenset({"T1"}))
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, trace_no=70), 0, pol)
    s = at(at(s, e.ChargerStarted(SID, "st", 0), 1, pol), e.MeterValue(SID, "m", 21_000), 30, pol)
    assert s.state is State.TOPPING_UP
    t = step(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=22_000), 31, pol)
    assert t.session is not None and not [x for x in t.commands if isinstance(x, c.Capture)]
    t = step(
        t.session, res("topup", Outcome.APPROVED, 1500, 7, for_ref="7"), 31, pol
    )  # the same hold, raised
    (cap,) = [x for x in t.commands if isinstance(x, c.Capture)]
    assert t.session is not None and t.session.holds[0].amount_minor == 3000
    assert cap.held_minor == 3000 and not cap.exact
    price = t.session.bill.price_minor
    s = at(t.session, res("capture", Outcome.APPROVED, price, 9, for_ref="7"), 32, pol)
    assert s.state is State.COMPLETED and (s.captured_minor, s.released_minor) == (
        price,
        3000 - price,
    )
