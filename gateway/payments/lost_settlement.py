"""A capture or release whose answer was lost: what the terminal's open holds and its last
result prove about the hold being settled (``enquiry_answered``), what is done while the
terminal does not answer (``enquiry_failed``), and a lost pre-auth cancelled at the acquirer by
our reference (``cancel_by_reference``). Booked only on positive evidence, as in
``settlement.py``: a capture gone without it is unconfirmed, a hold gone after its validity
lapsed; a release is proven by its own stored result, the terminal's last result, or two open
lists a retry interval apart that both omit the hold — never by one list (``_absent``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.payments import events as e
from gateway.payments.events import TimerKind
from gateway.payments.model import (
    BY_REFERENCE,
    Hold,
    HoldStatus,
    Session,
    replace_hold,
    sale_reference,
)
from gateway.payments.moves import Transition, finish, go, next_try, note
from gateway.payments.policy import Policy
from gateway.payments.settlement import (
    captured_as_asked,
    give_up,
    next_hold,
    released_as_asked,
    settle_command,
)
from gateway.payments.states import State, Trigger


def enquiry_answered(
    s: Session, ev: e.OpenPreauthsReported, now: datetime, policy: Policy, held: e.LastResult | None
) -> Transition:
    """What the terminal's open holds and last result prove about the hold being settled."""
    hold = s.current
    assert hold is not None  # noqa: S101 - an unknown settlement always has an open hold
    capture = s.state is State.CAPTURE_UNKNOWN
    if hold.ref in ev.refs:  # the terminal still holds it: our command did not happen
        if hold.absent_since is not None:  # an earlier list without it was wrong
            listed = replace(hold, absent_since=None)
            s, hold = replace_hold(s, hold, listed), listed
        at = next_try(s, now, policy)
        if at is None:
            return give_up(
                s, hold, now, policy, "still open as the hold is about to lapse", fate_known=True
            )
        kind = "capture" if capture else "release"
        return Transition(
            go(
                s,
                Trigger.STILL_OPEN,
                timer=(TimerKind.RETRY, at),
                attempts=s.attempts + 1,
                notes=note(s, f"hold {hold.ref} still open: {kind} again later"),
            )
        )
    if not capture and s.expires_at is not None and now >= s.expires_at:
        # Gone after its validity ended: the issuer may have let it lapse before our release
        # arrived, so its absence proves no release. Recorded as lapsed (nothing taken either
        # way), never as a release the terminal may not have made.
        return give_up(
            s,
            hold,
            now,
            policy,
            "gone from the terminal after its validity ended: lapsed (no evidence of the release)",
            fate_known=True,
        )
    last = _proof(s, hold, ev, held)
    if last is not None:
        kind = "capture" if capture else "release"
        s = replace(
            s, notes=note(s, f"{kind} of hold {hold.ref} confirmed by the terminal's last result")
        )
        shown = last.ref_display  # the booking as the slip prints it (ZVT: 0043)
        if last.ref is not None and shown is not None and shown != last.ref:
            s = replace(s, ref_display={**s.ref_display, last.ref: shown})
        if capture:
            done = captured_as_asked(hold, last.ref, now)
        else:
            done = released_as_asked(hold, last.ref)
        return next_hold(replace_hold(s, hold, done), now, policy)
    if not capture:
        return _absent(s, hold, now, policy)
    done = replace(hold, status=HoldStatus.UNCONFIRMED)
    s = replace(
        s,
        notes=note(s, f"hold {hold.ref} gone from the terminal without evidence of the capture"),
    )
    return next_hold(replace_hold(s, hold, done), now, policy)


def _proof(
    s: Session, hold: Hold, ev: e.OpenPreauthsReported, held: e.LastResult | None
) -> e.LastResult | None:
    """The result that proves our capture or release of ``hold`` (gone from the terminal), or
    None. A capture books the target and releases the rest; a release books nothing (ZVT echoes
    0 or the amount released), so one test serves both with the release's target 0."""
    target = hold.target_minor or 0
    # Its own approval, stored before the crash: the hold is gone, so it stood. Named by
    # whatever the driver names a booking (ZVT: its own receipt; nexo: the reservation's POI
    # transaction, the hold's own reference), so no test of the reference is needed here.
    if (
        held is not None
        and held.approved
        and held.ref is not None
        and held.amount_minor in (target, hold.amount_minor - target)
    ):
        return held
    last = ev.last
    # This session's own unproven results may be the terminal's last (the host rules out only
    # other sessions'): a capture gone unconfirmed; for a release, which two lists prove
    # anyway, also a lost top-up (a new reservation's receipt of the hold's amount). A capture
    # of an uncertain hold keeps its proof: its end-of-day evidence is costlier to wait for.
    release = s.state is State.RELEASE_UNKNOWN
    if any(h.status is HoldStatus.UNCONFIRMED or (release and h.uncertain) for h in s.holds):
        return None
    # a reference another hold of this session was made or booked with is that hold's result,
    # not ours (a top-up's own hold of the same amount, omitted by a stale list: attack probe)
    booked = {n for h in s.holds if h is not hold for n in (h.ref, h.booking_ref)}
    if (
        last is not None
        and last.approved
        and last.ref is not None
        and last.ref != hold.ref  # the hold's own pre-auth repeated is no capture or release
        and last.ref not in booked
        and last.ref not in ev.refs
        and last.amount_minor in (target, hold.amount_minor - target)
    ):
        return last
    return None


def _absent(s: Session, hold: Hold, now: datetime, policy: Policy) -> Transition:
    """A hold to release missing from the terminal's open list, with no result proving the
    release. One list is no evidence: a stale frame or an empty answer omits a hold still open
    (the full crash run booked hold 398 released that way and the sweep found it open 56 s
    later). The first absence is stored on the hold and the terminal asked again after the
    first retry interval (``policy.retry_initial``); a second list at least that much later
    that omits it too books the release. The validity's end, if it comes first, is the lapsed
    path above; a list that shows it again releases it again (``STILL_OPEN``)."""
    wait = policy.retry_initial
    first = hold.absent_since
    if first is not None and now - first >= wait:
        done = replace(hold, released_minor=hold.amount_minor, status=HoldStatus.RELEASED)
        why = (
            f"hold {hold.ref} not open at the terminal in two enquiries "
            f"{int((now - first).total_seconds())} s apart: released"
        )
        return next_hold(replace_hold(replace(s, notes=note(s, why)), hold, done), now, policy)
    if first is None:
        first = now
        s = replace_hold(s, hold, replace(hold, absent_since=now))
    why = f"hold {hold.ref} not in the terminal's open list: asked again before booking the release"
    return Transition(
        replace(
            s, attempts=s.attempts + 1, timer=(TimerKind.QUERY, first + wait), notes=note(s, why)
        )
    )


def enquiry_failed(s: Session, now: datetime, policy: Policy, *, busy: bool = False) -> Transition:
    """The backoff grows on silence only: a terminal that answered busy is there, and the next
    enquiry comes after the first interval (the deadline still bounds how long we keep asking)."""
    if busy:
        s = replace(s, attempts=0)
    at = next_try(s, now, policy)
    if at is not None:
        return Transition(replace(s, attempts=s.attempts + 1, timer=(TimerKind.QUERY, at)))
    if s.state is State.AUTH_UNKNOWN and s.terminal in policy.online_deadlines:
        return cancel_by_reference(s, now, policy)
    if s.state is State.AUTH_UNKNOWN:
        why = "terminal unreachable: any hold it made is left to the terminal sweep"
        return finish(go(s, Trigger.UNREACHABLE, notes=note(s, why)))
    hold = s.current
    assert hold is not None  # noqa: S101 - an unknown settlement always has an open hold
    return give_up(
        s, hold, now, policy, "terminal unreachable until the hold lapsed", fate_known=False
    )


def cancel_by_reference(s: Session, now: datetime, policy: Policy) -> Transition:
    """A lost pre-auth the terminal could not tell us about, on a terminal whose acquirer takes
    modifications online: a hold may exist that no session would own, so it is cancelled at the
    acquirer by the reference we gave the terminal. Its amount is unknown: booked 0, released
    only on the acquirer's webhook; no webhook leaves it unknown (and visible) like any release."""
    ref = f"{BY_REFERENCE}{sale_reference(s.id)}"
    why = "outcome of the pre-auth never known: cancelled at the acquirer by our reference"
    s = go(
        s,
        Trigger.CANCEL_BY_REFERENCE,
        holds=(Hold(ref, 0, target_minor=0),),
        expires_at=s.created_at + policy.validity.default,
        attempts=0,
        notes=note(s, why),
    )
    return settle_command(s, now, policy)
