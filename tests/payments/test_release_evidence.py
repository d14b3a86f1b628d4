"""A release whose answer was lost is booked only on positive evidence (issue 26, the full
crash run's hold 398): its own stored result, the terminal's last result naming it, or two open
lists a retry interval apart that both omit the hold. One list is no evidence: a stale frame or
an empty answer booked hold 398 released, and 56 s later the sweep found it open and made a
second owner for it. The first absence survives a restart (a real SQLite store)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import HoldStatus
from gateway.payments.session import Session, State
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.attack.round3_rig import make_host
from tests.payments.fixtures import FIXED, T0, at, step
from tests.payments.fixtures import terminal_result as res

SID = "s1"
WAIT = FIXED.retry_initial  # the confirmation wait: the first retry interval (30 s)


def _releasing(expires_in_minutes: float = 600) -> Session:
    """A charge that never started: the start timer releases hold 7 (15.00)."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7), 0)
    s = replace(s, expires_at=T0 + timedelta(minutes=expires_in_minutes))
    s = at(s, e.TimerFired(SID, "t", e.TimerKind.START), 4)
    assert s.state is State.RELEASING
    return s


def _lost(s: Session) -> Session:
    s = at(s, res("release", Outcome.UNKNOWN, None, None, for_ref="7"), 5)
    assert s.state is State.RELEASE_UNKNOWN
    return s


def _minutes(delta: timedelta) -> float:
    return delta.total_seconds() / 60


def test_one_list_without_the_hold_books_no_release_and_asks_again() -> None:
    """The double claim of hold 398: one enquiry's list without the hold booked it released.
    Now the first absence is noted on the hold and the terminal asked again after the wait."""
    s = at(_lost(_releasing()), e.OpenPreauthsReported(SID, "q1", ()), 6)
    hold = s.holds[0]
    assert s.state is State.RELEASE_UNKNOWN and not s.final
    assert hold.status is HoldStatus.OPEN and s.released_minor == 0
    assert hold.absent_since == T0 + timedelta(minutes=6)
    assert s.timer == (e.TimerKind.QUERY, T0 + timedelta(minutes=6) + WAIT)
    asked = step(s, e.TimerFired(SID, "tq", e.TimerKind.QUERY), 6 + _minutes(WAIT))
    assert [type(x) for x in asked.commands] == [c.QueryOpenPreauths]


def test_two_lists_a_wait_apart_without_the_hold_book_the_release() -> None:
    s = at(_lost(_releasing()), e.OpenPreauthsReported(SID, "q1", ()), 6)
    soon = at(s, e.OpenPreauthsReported(SID, "q2", ()), 6 + _minutes(WAIT) / 2)
    assert soon.state is State.RELEASE_UNKNOWN and soon.holds[0].status is HoldStatus.OPEN
    assert soon.holds[0].absent_since == T0 + timedelta(minutes=6)  # the first sighting kept
    assert soon.timer == (e.TimerKind.QUERY, T0 + timedelta(minutes=6) + WAIT)
    done = at(soon, e.OpenPreauthsReported(SID, "q3", ()), 6 + _minutes(WAIT))
    assert done.state is State.VOIDED and done.holds[0].status is HoldStatus.RELEASED
    assert done.released_minor == 1500


def test_a_hold_listed_again_is_released_again() -> None:
    """The first list was stale: the next shows the hold open, so the release is sent again
    and the old absence forgotten (a later absence starts the count again)."""
    s = at(_lost(_releasing()), e.OpenPreauthsReported(SID, "q1", ()), 6)
    s = at(s, e.OpenPreauthsReported(SID, "q2", ("7",)), 6.5)
    assert s.state is State.RELEASE_RETRY and s.holds[0].absent_since is None
    assert s.timer is not None and s.timer[0] is e.TimerKind.RETRY
    again = step(s, e.TimerFired(SID, "tr", e.TimerKind.RETRY), _minutes(s.timer[1] - T0))
    assert [type(x) for x in again.commands] == [c.Release]


def test_its_own_stored_release_result_books_it_at_once() -> None:
    """The release's approval, stored before it was acknowledged, then the line dropped: with
    the hold gone it stood, booked with the terminal's receipt."""
    s = _releasing()
    s = at(s, res("release", Outcome.APPROVED, 0, 9, for_ref="7", provisional=True), 4.5)
    s = at(_lost(s), e.OpenPreauthsReported(SID, "q1", ()), 6)
    assert s.state is State.VOIDED and s.holds[0].status is HoldStatus.RELEASED
    assert s.holds[0].booking_ref == "9" and s.released_minor == 1500


def test_the_terminals_last_result_naming_the_release_books_it_at_once() -> None:
    last = e.LastResult(approved=True, ref="9", amount_minor=0)
    s = at(_lost(_releasing()), e.OpenPreauthsReported(SID, "q1", (), last=last), 6)
    assert s.state is State.VOIDED and s.holds[0].booking_ref == "9"


def test_the_holds_own_preauth_repeated_is_no_evidence_of_its_release() -> None:
    last = e.LastResult(approved=True, ref="7", amount_minor=1500)
    s = at(_lost(_releasing()), e.OpenPreauthsReported(SID, "q1", (), last=last), 6)
    assert s.state is State.RELEASE_UNKNOWN and s.holds[0].status is HoldStatus.OPEN


def test_validity_ending_before_the_second_list_is_lapsed_not_released() -> None:
    """The hold's validity ends within the wait: the second list (after it) cannot tell our
    release from the issuer letting it lapse: lapsed, nothing released or taken."""
    s = at(_lost(_releasing(expires_in_minutes=6.2)), e.OpenPreauthsReported(SID, "q1", ()), 6)
    assert s.timer is not None  # a next action and a deadline
    u = at(s, e.OpenPreauthsReported(SID, "q2", ()), 6 + _minutes(WAIT))
    assert u.state is State.RELEASE_FAILED and u.holds[0].status is HoldStatus.LAPSED
    assert (u.captured_minor, u.released_minor) == (0, 0)


# ---- on a real store: a restart, and the sweep ----------------------------------------------


def _lost_at_host(host: EngineHost, sid: str = SID) -> Session:
    """A charge with no energy: hold 7 (50.00) released, the answer lost, one empty list."""
    for ev in (
        e.CardPresented(sid, "card", "E1", "T1", "EUR"),
        res("preauthorize", Outcome.APPROVED, 5000, 7, sid=sid),
        e.ChargerStarted(sid, "st", 1000),
        e.ChargerStopped(session_id=sid, event_id="sp", meter_wh=1000),
        res("release", Outcome.UNKNOWN, None, None, sid=sid, for_ref="7"),
        e.OpenPreauthsReported(sid, "q1", ()),
    ):
        host.handle(ev)
    s = host.load(sid)
    assert s is not None and s.state is State.RELEASE_UNKNOWN
    return s


def test_the_first_absence_is_stored_and_a_restart_counts_again(tmp_path: Path) -> None:
    """The first absence is stored with the session (nothing of the rule lives in memory), but
    both lists must come from one run: after a kill, a serial line may still carry the dead
    run's frames and the clock may be set at boot (``timers.forget_absences``)."""
    host, clock, store = make_host(tmp_path)
    first = _lost_at_host(host).holds[0].absent_since
    assert first == clock.now
    store.close()
    clock.advance(WAIT.total_seconds() / 2)
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    host = EngineHost(store, host.policy, clock)
    stored = host.load(SID)
    assert stored is not None and stored.holds[0].absent_since == first
    resumed = host.handle(e.Resumed(SID, "resume:2"))
    assert [type(x) for x in resumed.commands] == [c.QueryOpenPreauths]
    soon = host.handle(e.OpenPreauthsReported(SID, "q2", ())).session
    assert soon is not None and soon.state is State.RELEASE_UNKNOWN
    assert soon.holds[0].absent_since == clock.now  # this run's first absence
    clock.advance(WAIT.total_seconds() / 2)  # a full wait after the last run's absence
    again = host.handle(e.OpenPreauthsReported(SID, "q3", ())).session
    assert again is not None and again.state is State.RELEASE_UNKNOWN
    clock.advance(WAIT.total_seconds() / 2)
    done = host.handle(e.OpenPreauthsReported(SID, "q4", ())).session
    assert done is not None and done.state is State.VOIDED
    assert {p["kind"]: p["amount_minor"] for p in store.payments(SID)}["release"] == 5000
    store.close()


def test_the_sweep_makes_no_second_owner_for_a_hold_whose_release_is_unproven(
    tmp_path: Path,
) -> None:
    """The terminal lists hold 7 after one enquiry omitted it: the session releasing it still
    owns it, so the sweep makes no orphan session to release it a second time."""
    host, clock, store = make_host(tmp_path)
    _lost_at_host(host)
    clock.advance(56)
    assert host.sweep("T1", ("7",), "EUR", "sweep-1") == []
    assert [s.id for s in host.open_sessions()] == [SID]
    store.close()


def test_another_sessions_lost_result_is_no_evidence_of_our_release(tmp_path: Path) -> None:
    """A release's result names no hold: with another session of the terminal whose result
    was lost, the terminal's last result may be that one's, so it proves nothing for ours."""
    host, clock, store = make_host(tmp_path)
    for ev in (
        e.CardPresented("s2", "card", "E2", "T1", "EUR"),
        res("preauthorize", Outcome.APPROVED, 5000, 3, sid="s2"),
        e.ChargerStarted("s2", "st", 1000),
        e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=1000),
        res("release", Outcome.UNKNOWN, None, None, sid="s2", for_ref="3"),
    ):
        host.handle(ev)
    _lost_at_host(host)  # our first absence
    clock.advance(5)
    last = e.LastResult(approved=True, ref="9", amount_minor=0)
    s2 = host.handle(e.OpenPreauthsReported(SID, "q2", (), last=last)).session
    assert s2 is not None and s2.state is State.RELEASE_UNKNOWN  # not at once: asked again
    store.close()
