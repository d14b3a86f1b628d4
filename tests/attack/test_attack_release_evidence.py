"""Attack on the merged release-evidence change (5b3ddac): a release whose answer was lost is
booked only on its own stored approval, the terminal's unambiguous last result, or two open
lists ``retry_initial`` apart that both omit the hold (``lost_settlement``). Each probe tries
one way to book a release (or a capture) the terminal may not have made, or to leave a session
without a next action; the engine's own core (sans-I/O) or a host on a real SQLite store."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from drivers.base import Outcome
from drivers.money import Money
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import HoldStatus
from gateway.payments.record import from_json, to_json
from gateway.payments.session import Policy, Session, State
from gateway.runtime import terminal_calls
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.attack.round3_rig import MC, P_TOPUP, make_host, two_holds
from tests.nexo import conftest as nexo_rigs
from tests.nexo.conftest import MakeRig
from tests.payments.fixtures import FIXED, T0, at, step
from tests.payments.fixtures import terminal_result as res

SID = "s1"
make_rig = nexo_rigs.make_rig  # the nexo POI simulator's fixture, for the nexo probe
WAIT = FIXED.retry_initial
HALF = WAIT.total_seconds() / 120  # half the wait, in minutes


def _releasing(expires_in_minutes: float = 600) -> Session:
    """A charge that never started: the start timer releases hold 7 (50.00)."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7), 0)
    s = replace(s, expires_at=T0 + timedelta(minutes=expires_in_minutes))
    s = at(s, e.TimerFired(SID, "t", e.TimerKind.START), 4)
    assert s.state is State.RELEASING
    return s


def _lost(s: Session, minutes: float = 5, ref: str = "7") -> Session:
    s = at(s, res("release", Outcome.UNKNOWN, None, None, for_ref=ref), minutes, s_pol(s))
    assert s.state is State.RELEASE_UNKNOWN
    return s


def s_pol(s: Session) -> Policy:
    return P_TOPUP if len(s.holds) > 1 else FIXED


def _listed(s: Session, minutes: float, *refs: str, n: str = "q", **kw: object) -> Session:
    ev = e.OpenPreauthsReported(SID, f"{n}{minutes}", tuple(refs), **kw)  # type: ignore[arg-type]
    return at(s, ev, minutes, s_pol(s))


def _booked_nothing(s: Session) -> bool:
    return s.released_minor == 0 and s.captured_minor == 0 and not s.final


# ---- 1. the two lists -------------------------------------------------------------------------


def test_the_same_stale_list_delivered_twice_books_nothing() -> None:
    """The same stale answer handed twice (a duplicate frame, the same event re-read): the
    second copy comes at once, not a wait later, so it is not a second list."""
    s = _lost(_releasing())
    once = e.OpenPreauthsReported(SID, "q-stale", ())
    s = at(s, once, 6)
    s = at(s, once, 6)  # the very same event
    s = at(s, replace(once, event_id="q-stale-copy"), 6 + 1 / 60)
    assert _booked_nothing(s) and s.holds[0].status is HoldStatus.OPEN
    assert s.timer == (e.TimerKind.QUERY, T0 + timedelta(minutes=6) + WAIT)


def test_a_clock_moved_backwards_never_books_before_a_real_wait() -> None:
    """The first absence stored, the clock then set back an hour (a restart with a wrong RTC):
    the next list is 'before' the first absence, so it books nothing, and the session still
    has its next action and a deadline."""
    s = _listed(_lost(_releasing(expires_in_minutes=6000)), 120)
    back = _listed(s, 60, n="back")  # an hour earlier by the clock
    assert _booked_nothing(back) and back.holds[0].absent_since == T0 + timedelta(minutes=120)
    assert back.timer is not None and back.timer[0] is e.TimerKind.QUERY
    fired = step(back, e.TimerFired(SID, "tq", e.TimerKind.QUERY), 120 + 2 * HALF)
    assert [type(x) for x in fired.commands] == [c.QueryOpenPreauths]


def test_absent_present_absent_restarts_the_count() -> None:
    """Absent, then listed (the first list was stale: released again), then absent again: the
    old absence is forgotten, so a list a wait after the FIRST absence but not after the
    second books nothing."""
    s = _listed(_lost(_releasing()), 6)
    s = _listed(s, 6 + HALF, "7")
    assert s.state is State.RELEASE_RETRY and s.holds[0].absent_since is None
    assert s.timer is not None
    s = at(s, e.TimerFired(SID, "tr", e.TimerKind.RETRY), (s.timer[1] - T0).total_seconds() / 60)
    assert s.state is State.RELEASING
    s = _lost(s, 8)
    s = _listed(s, 8.1)  # second absence: a new first sighting
    assert s.holds[0].absent_since == T0 + timedelta(minutes=8.1)
    s = _listed(s, 8.1 + HALF)  # more than a wait after the first absence, not the second
    assert _booked_nothing(s)


def test_second_list_after_the_validity_is_lapsed_not_released() -> None:
    s = _listed(_lost(_releasing(expires_in_minutes=7)), 6)
    u = _listed(s, 7.5)
    assert u.state is State.RELEASE_FAILED and u.holds[0].status is HoldStatus.LAPSED
    assert u.released_minor == 0


def test_a_failed_enquiry_between_two_absences_keeps_the_first_and_a_timer() -> None:
    s = _listed(_lost(_releasing()), 6)
    s = _listed(s, 6.2, failed=True)
    assert s.holds[0].absent_since == T0 + timedelta(minutes=6) and s.timer is not None
    assert _listed(s, 6 + 2 * HALF).state is State.VOIDED


# ---- 2. two holds (top-ups as new holds) ------------------------------------------------------


def _two_to_release() -> Session:
    """Hold 7 (15.00) and its top-up hold 8 (15.00), nothing to capture (a free charge, or the
    CPO's price 0): both released, hold 7 first. Built from the engine's two-hold session."""
    s = two_holds(21_000)
    holds = tuple(replace(h, target_minor=0) for h in s.holds)
    return replace(s, holds=holds, state=State.RELEASING, expires_at=T0 + timedelta(hours=20))


def test_the_second_holds_release_does_not_inherit_the_first_absence() -> None:
    s = _lost(_two_to_release(), 61)
    s = _listed(s, 62, "8")
    done7 = _listed(s, 62 + 2 * HALF, "8")
    assert done7.holds[0].status is HoldStatus.RELEASED and done7.state is State.RELEASING
    s = _lost(done7, 63, ref="8")
    s = _listed(s, 63.1)  # hold 8's first absence: nothing booked yet
    assert s.holds[1].status is HoldStatus.OPEN and s.holds[1].absent_since is not None
    assert s.state is State.RELEASE_UNKNOWN and s.timer is not None


def test_the_top_up_holds_own_approval_is_no_evidence_of_the_first_holds_release() -> None:
    """Hold 7's release lost; a stale list omits both holds; the terminal's last result is the
    top-up that made hold 8 (receipt 8, 15.00 = hold 7's amount). That is this session's
    other hold, not a release: nothing may be booked on one list."""
    s = _lost(_two_to_release(), 61)
    last = e.LastResult(approved=True, ref="8", amount_minor=1500)
    u = _listed(s, 62, last=last)
    assert u.holds[0].status is HoldStatus.OPEN, "hold 7 booked released from hold 8's top-up"
    assert u.state is State.RELEASE_UNKNOWN


def test_the_top_up_holds_approval_is_no_evidence_of_the_first_holds_capture() -> None:
    """The same for a capture: 27 kWh captures all of hold 7 (15.00) and 0.46 of hold 8; the
    capture of hold 7 is lost, a stale list omits both, and the last result is hold 8's
    top-up (15.00 = the target): no capture is proven, hold 7 is unconfirmed, never captured
    on its sister hold's receipt."""
    s = two_holds(27_000)
    assert s.state is State.CAPTURING and s.holds[0].target_minor == 1500
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 61, P_TOPUP)
    last = e.LastResult(approved=True, ref="8", amount_minor=1500)
    u = at(s, e.OpenPreauthsReported(SID, "q", (), last=last), 62, P_TOPUP)
    assert u.holds[0].status is not HoldStatus.CAPTURED, "captured on hold 8's top-up receipt"


def test_a_stored_approval_for_another_hold_is_no_evidence_for_this_one() -> None:
    """A provisional release approval naming hold 8 arrives while hold 7 is being released
    (a late frame of another command): stored as if it were hold 7's, it would book hold 7
    released once a stale list omits it."""
    s = _two_to_release()
    s = at(s, res("release", Outcome.APPROVED, 0, 9, for_ref="8", provisional=True), 60.5)
    u = _listed(_lost(s, 61), 62)
    assert u.holds[0].status is HoldStatus.OPEN, "hold 7 booked on hold 8's stored approval"


# ---- 3. the evidence --------------------------------------------------------------------------


def test_the_holds_own_preauth_with_its_amount_is_no_release() -> None:
    last = e.LastResult(approved=True, ref="7", amount_minor=5000, ref_display="0007")
    assert _booked_nothing(_listed(_lost(_releasing()), 6, last=last))


def test_a_declined_last_result_or_one_without_a_receipt_proves_nothing() -> None:
    for last in (
        e.LastResult(approved=False, ref="9", amount_minor=0),
        e.LastResult(approved=True, ref=None, amount_minor=0),
        e.LastResult(approved=True, ref="9", amount_minor=None),
        e.LastResult(approved=True, ref="9", amount_minor=4999),
    ):
        assert _booked_nothing(_listed(_lost(_releasing()), 6, last=last)), last


def test_a_last_result_still_listed_open_is_no_release() -> None:
    """A pre-auth of the same amount that is itself still open (another driver's hold) is no
    release of ours."""
    last = e.LastResult(approved=True, ref="12", amount_minor=5000)
    assert _booked_nothing(_listed(_lost(_releasing()), 6, "12", last=last))


# ---- 4. a capture whose answer was lost is not changed ----------------------------------------


def _capture_lost() -> Session:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7), 0)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1)
    s = at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=11_000), 60)
    return at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 61)


def test_a_lost_capture_gone_from_one_list_is_unconfirmed_at_once_as_before() -> None:
    u = _listed(_capture_lost(), 62)
    assert u.state is State.CAPTURE_UNCONFIRMED and u.holds[0].absent_since is None
    assert u.bill.owed_minor == 655


def test_a_lost_capture_proven_by_the_last_result_is_captured_as_before() -> None:
    last = e.LastResult(approved=True, ref="8", amount_minor=655)
    u = _listed(_capture_lost(), 62, last=last)
    assert u.state is State.COMPLETED and u.holds[0].booking_ref == "8"


# ---- 5. every release_unknown session has a next action and a deadline ------------------------

_MOVES = ("absent", "listed", "failed", "busy", "timer", "answer-timer", "lost-again")


def _move(s: Session, move: str, minutes: float) -> Session:
    if move in ("absent", "listed", "failed", "busy"):
        refs = ("7",) if move == "listed" else ()
        failed = move in ("failed", "busy")
        ev = e.OpenPreauthsReported(
            SID, f"{move}{minutes}", refs, failed=failed, busy=move == "busy"
        )
        return at(s, ev, minutes)
    if move == "lost-again":
        if s.state is not State.RELEASING:
            return s
        return at(s, res("release", Outcome.UNKNOWN, None, None, for_ref="7"), minutes)
    if s.timer is None:
        return s
    kind = e.TimerKind.ANSWER if move == "answer-timer" else s.timer[0]
    when = max(minutes, (s.timer[1] - T0).total_seconds() / 60)
    return at(s, e.TimerFired(SID, f"{move}{minutes}", kind), when)


def test_every_walk_from_a_lost_release_keeps_a_timer_and_books_only_with_two_lists() -> None:
    """Every sequence of four moves from a lost release (lists with and without the hold,
    failed or busy enquiries, timers, a lost answer again): an open session always has a
    timer, and a release is booked only after two absences a wait apart with no listing
    between them."""
    start = _lost(_releasing(expires_in_minutes=24 * 60))
    for moves in itertools.product(_MOVES, repeat=4):
        s, t = start, 6.0
        absences: list[float] = []
        for move in moves:
            before = s
            s = _move(s, move, t)
            if move == "listed" and before.state is State.RELEASE_UNKNOWN:
                absences = []
            if move == "absent" and before.state is State.RELEASE_UNKNOWN:
                absences.append(t)
            if not s.final:
                assert s.timer is not None, (moves, s.state)
            if s.holds[0].status is HoldStatus.RELEASED:
                assert len(absences) >= 2 and absences[-1] - absences[0] >= 2 * HALF, moves
            t = max(t, (s.timer[1] - T0).total_seconds() / 60 if s.timer else t) + HALF / 3


# ---- 6. old rows, and the stored absence -----------------------------------------------------


def test_a_row_stored_before_absent_since_loads_and_is_asked_again() -> None:
    """A row written before the field (its holds without ``absent_since``) loads with none, and
    one list then books nothing; a noted absence survives the round trip through the row."""
    s = _lost(_releasing())
    row = to_json(s)
    row["holds"] = [{k: v for k, v in h.items() if k != "absent_since"} for h in row["holds"]]
    old = from_json(row)
    assert old.holds[0].absent_since is None and old == s
    assert _booked_nothing(_listed(old, 6))
    noted = _listed(s, 6)
    assert from_json(to_json(noted)).holds[0].absent_since == T0 + timedelta(minutes=6)


# ---- 7. on a real store: the owner of the terminal's last result ------------------------------


def _lost_release_at(host: EngineHost, sid: str, receipt: int) -> Session:
    for ev in (
        e.CardPresented(sid, "card", "E1", "T1", "EUR"),
        res("preauthorize", Outcome.APPROVED, 5000, receipt, sid=sid, card=MC),
        e.ChargerStarted(sid, "st", 1000),
    ):
        host.handle(ev)
    return _release_lost_now(host, sid, receipt)


def _release_lost_now(host: EngineHost, sid: str, receipt: int) -> Session:
    host.handle(e.ChargerStopped(session_id=sid, event_id="sp", meter_wh=1000))
    host.handle(res("release", Outcome.UNKNOWN, None, None, sid=sid, for_ref=str(receipt)))
    s = host.load(sid)
    assert s is not None and s.state is State.RELEASE_UNKNOWN
    return s


def test_a_stale_list_twice_through_the_host_books_nothing(tmp_path: Path) -> None:
    host, clock, store = make_host(tmp_path)
    try:
        _lost_release_at(host, SID, 7)
        ev = e.OpenPreauthsReported(SID, "q1", ())
        host.handle(ev)
        clock.advance(WAIT.total_seconds() + 1)
        again = host.handle(ev).session  # the same event id: taken once
        s = host.load(SID)
        assert s is not None and s.state is State.RELEASE_UNKNOWN, again
        assert [p["kind"] for p in store.payments(SID)].count("release") == 0
    finally:
        store.close()


def test_a_restart_with_the_clock_set_back_books_nothing_and_keeps_a_timer(
    tmp_path: Path,
) -> None:
    host, clock, store = make_host(tmp_path)
    _lost_release_at(host, SID, 7)
    host.handle(e.OpenPreauthsReported(SID, "q1", ()))
    store.close()
    clock.advance(-3600)
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    try:
        host = EngineHost(store, host.policy, clock)
        host.handle(e.Resumed(SID, "resume:2"))
        s = host.handle(e.OpenPreauthsReported(SID, "q2", ())).session
        assert s is not None and s.state is State.RELEASE_UNKNOWN and s.timer is not None
    finally:
        store.close()


def test_another_sessions_release_older_than_two_days_is_no_evidence(tmp_path: Path) -> None:
    """Our session (a Mastercard hold, 30 days valid) charges for three days. Meanwhile s2's
    release went out and its answer was lost (resolved by two absences, its receipt 9 never
    seen). Nothing else happened at the terminal, so its last result is still s2's release
    (receipt 9, 0). Our release is then lost and one stale list omits hold 7: s2's row was
    last changed three days ago, outside ``ambiguous``'s two-day window, so its release would
    book ours on one list."""
    host, clock, store = make_host(tmp_path)
    try:
        for ev in (
            e.CardPresented(SID, "card", "E1", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 5000, 7, card=MC),
            e.ChargerStarted(SID, "st", 1000),
        ):
            host.handle(ev)
        clock.advance(60)
        _lost_release_at(host, "s2", 3)
        host.handle(e.OpenPreauthsReported("s2", "q1", ("7",)))
        clock.advance(WAIT.total_seconds())
        s2 = host.handle(e.OpenPreauthsReported("s2", "q2", ("7",))).session
        assert s2 is not None and s2.state is State.VOIDED
        clock.advance(3 * 24 * 3600)
        _release_lost_now(host, SID, 7)
        last = e.LastResult(approved=True, ref="9", amount_minor=0)
        s = host.handle(e.OpenPreauthsReported(SID, "q1", (), last=last)).session
        assert s is not None and s.state is State.RELEASE_UNKNOWN, "booked on s2's release"
    finally:
        store.close()


def test_another_sessions_refund_of_the_same_amount_is_no_evidence(tmp_path: Path) -> None:
    """s2 captured 50.00 (a price above its hold) and refunded all of it (a corrected CDR of
    0): the terminal's last result is that refund, receipt 11, 50.00 = our hold's amount. The
    refund's receipt is on s2's refund, not on a hold, and s2 lost nothing: our lost release
    must not be booked from it on one stale list."""
    host, clock, store = make_host(tmp_path)
    try:
        for ev in (
            e.CardPresented(SID, "card", "E1", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 5000, 7, card=MC),
            e.ChargerStarted(SID, "st", 1000),
            e.CardPresented("s2", "card", "E2", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 5000, 3, sid="s2", card=MC),
            e.ChargerStarted("s2", "st", 1000),
        ):
            host.handle(ev)
        clock.advance(3 * 3600)
        host.handle(e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=120_000))
        host.handle(res("capture", Outcome.APPROVED, 5000, 10, sid="s2", for_ref="3"))
        ask = e.RefundRequested(session_id="s2", event_id="rf", amount_minor=5000, reason="cdr")
        s2 = host.handle(ask).session
        assert s2 is not None and s2.captured_minor == 5000
        host.handle(res("refund", Outcome.APPROVED, 5000, 11, sid="s2", refund_id="rf"))
        clock.advance(60)
        _release_lost_now(host, SID, 7)
        last = e.LastResult(approved=True, ref="11", amount_minor=5000)
        s = host.handle(e.OpenPreauthsReported(SID, "q1", (), last=last)).session
        assert s is not None and s.state is State.RELEASE_UNKNOWN, "booked on s2's refund"
    finally:
        store.close()


def test_another_sessions_refund_still_out_is_no_evidence(tmp_path: Path) -> None:
    """s2's refund of 50.00 is sent and its answer not yet in (no receipt known): the
    terminal's last result, receipt 11 of 50.00, may be that refund, so it proves nothing."""
    host, clock, store = make_host(tmp_path)
    try:
        for ev in (
            e.CardPresented(SID, "card", "E1", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 5000, 7, card=MC),
            e.ChargerStarted(SID, "st", 1000),
            e.CardPresented("s2", "card", "E2", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 5000, 3, sid="s2", card=MC),
            e.ChargerStarted("s2", "st", 1000),
        ):
            host.handle(ev)
        clock.advance(3 * 3600)
        host.handle(e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=120_000))
        host.handle(res("capture", Outcome.APPROVED, 5000, 10, sid="s2", for_ref="3"))
        ask = e.RefundRequested(session_id="s2", event_id="rf", amount_minor=5000, reason="cdr")
        s2 = host.handle(ask).session
        assert s2 is not None and s2.refunds[-1].pending and not s2.lost_results
        clock.advance(60)
        _release_lost_now(host, SID, 7)
        last = e.LastResult(approved=True, ref="11", amount_minor=5000)
        s = host.handle(e.OpenPreauthsReported(SID, "q1", (), last=last)).session
        assert s is not None and s.state is State.RELEASE_UNKNOWN, "booked on s2's refund"
    finally:
        store.close()


# ---- 8. nexo: the driver's ledger is the open list ---------------------------------------------


async def test_nexo_a_lost_reversal_is_booked_only_after_two_ledger_lists(
    make_rig: MakeRig,
) -> None:
    """nexo has no open list: the driver's ledger stands in for it, closed by the POI's
    TransactionStatus. A reversal whose answer was lost (the daemon killed) is recovered after
    the restart. In the runner's order (the list, then the last result) the first list still
    shows the hold (the ledger is closed by ``last_result``), so the release is sent again and
    the POI answers NotFound; the next lists omit it and the release is booked on the second
    of them, a wait later, never on the reversal naming the hold itself. The POI has let the
    reservation go: the booking is true."""
    rig = await make_rig("xml")
    first = rig.terminal()
    pa = await first.preauthorize(Money(5000, "EUR"), "s1")
    assert pa.approved and pa.ref is not None
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    auth = e.TerminalResultArrived(
        session_id=SID,
        event_id="pa",
        operation=e.Operation.PREAUTHORIZE,
        outcome=Outcome.APPROVED,
        amount_minor=5000,
        ref=pa.ref,
    )
    s = at(at(s, auth, 0), e.TimerFired(SID, "t", e.TimerKind.START), 4)
    rig.poi.config.lose_answers, rig.poi.config.in_progress = 1, 1000
    assert (await first.release(pa.ref, Money(5000, "EUR"))).outcome is Outcome.UNKNOWN
    await first.close()  # the daemon dies; the POI has reversed the reservation
    rig.poi.config.in_progress = 0
    s = _lost(s, ref=pa.ref)
    second = rig.terminal()

    async def enquiry(n: str, minutes: float) -> Session:
        listed = await second.open_preauthorizations()
        last = await terminal_calls.last_result(second)
        assert listed.approved
        return at(s, e.OpenPreauthsReported(SID, n, listed.open_refs, last=last), minutes)

    s = await enquiry("q1", 6)
    assert s.state is State.RELEASE_RETRY and s.timer is not None  # the ledger still had it
    s = at(s, e.TimerFired(SID, "tr", e.TimerKind.RETRY), (s.timer[1] - T0).total_seconds() / 60)
    assert s.state is State.RELEASING
    again = await second.release(pa.ref, Money(5000, "EUR"))
    assert again.outcome is Outcome.ERROR and "NotFound" in again.message
    answer = e.TerminalResultArrived(
        session_id=SID,
        event_id="rel-2",
        operation=e.Operation.RELEASE,
        outcome=again.outcome,
        ref=again.ref,
        for_ref=pa.ref,
        message=again.message,
    )
    s = at(s, answer, 7)
    assert s.state is State.RELEASE_UNKNOWN
    s = await enquiry("q2", 7.1)
    assert _booked_nothing(s) and s.holds[0].absent_since is not None
    s = await enquiry("q3", 7.1 + 2 * HALF)
    assert s.state is State.VOIDED and s.released_minor == 5000
    assert rig.poi.open_reservations() == []
