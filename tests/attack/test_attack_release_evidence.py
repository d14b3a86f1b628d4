"""Attack on the merged release-evidence change (5b3ddac): a release whose answer was lost is
booked only on its own stored approval, the terminal's unambiguous last result, or two open
lists ``retry_initial`` apart that both omit the hold (``lost_settlement``). Each probe tries
one way to book a release (or a capture) the terminal may not have made, or to leave a session
without a next action, on the engine's own core (sans-I/O); the probes on a real store and
the nexo POI simulator are in ``test_attack_release_evidence_host``."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import HoldStatus
from gateway.payments.record import from_json, to_json
from gateway.payments.session import Policy, Session, State
from tests.attack.round3_rig import P_TOPUP, two_holds
from tests.payments.fixtures import FIXED, T0, at, step
from tests.payments.fixtures import terminal_result as res

SID = "s1"
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


def test_a_clock_moved_forwards_does_not_shorten_the_wait() -> None:
    """The first absence noted, then a restart whose clock is an hour ahead: the list that the
    resume asks for comes seconds after the first one in real time. Was a BREAK (it booked the
    release); a restart now starts the count again (``timers.forget_absences``), so it takes a
    second list a wait after the resume's."""
    s = _listed(_lost(_releasing(expires_in_minutes=6000)), 6)
    s = at(s, e.Resumed(SID, "resume:2"), 66)  # seconds later in real time; the clock says +1 h
    assert s.holds[0].absent_since is None and s.timer is not None
    ahead = _listed(s, 66, n="resumed")
    assert _booked_nothing(ahead) and ahead.holds[0].absent_since is not None
    assert _listed(ahead, 66 + 2 * HALF, n="later").state is State.VOIDED


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


def test_the_sessions_own_unconfirmed_capture_is_no_evidence_of_its_next_release() -> None:
    """Hold 7 is captured in full (15.00) and hold 8 released (a price of exactly 15.00). The
    capture's answer is lost and nothing proves it (the host dropped the last result as
    another session's): hold 7 unconfirmed. Hold 8's release is then lost, a stale list omits
    it, and the terminal's last result is hold 7's capture (receipt 30, echoing 0 released):
    this session's own unproven capture, never a release of hold 8."""
    s = two_holds(27_000)
    holds = (replace(s.holds[0], target_minor=1500), replace(s.holds[1], target_minor=0))
    s = replace(s, holds=holds)
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 61, P_TOPUP)
    s = at(s, e.OpenPreauthsReported(SID, "q1", ("8",)), 62, P_TOPUP)
    assert s.holds[0].status is HoldStatus.UNCONFIRMED and s.state is State.RELEASING
    s = _lost(s, 63, ref="8")
    last = e.LastResult(approved=True, ref="30", amount_minor=0)
    u = at(s, e.OpenPreauthsReported(SID, "q2", (), last=last), 64, P_TOPUP)
    assert u.holds[1].status is HoldStatus.OPEN, "hold 8 released on hold 7's unproven capture"


def test_a_lost_top_ups_result_is_no_evidence_of_the_holds_release() -> None:
    """Hold 7 (15.00) had a top-up whose answer was lost (the hold uncertain); on a terminal
    that makes a top-up a new reservation its result is a new receipt (40) of 15.00. Hold 7's
    release is then lost and a stale list omits it: receipt 40 may be that top-up, never
    proof of the release."""
    s = _releasing()
    s = replace(s, holds=(replace(s.holds[0], amount_minor=1500, uncertain=True),))
    last = e.LastResult(approved=True, ref="40", amount_minor=1500)
    u = _listed(_lost(s), 6, last=last)
    assert u.holds[0].status is HoldStatus.OPEN, "released on the lost top-up's receipt"


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
