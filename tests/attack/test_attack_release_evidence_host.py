"""Attack on the merged release-evidence change (5b3ddac), on real parts: a host on a real
SQLite store (whose last result is it: ``last_result_owner.ambiguous``; a restart with the
clock set back) and the nexo POI simulator over loopback HTTP (the driver's ledger as the open
list). The sans-I/O probes are in ``test_attack_release_evidence``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.money import Money
from drivers.sim.terminal import SimConfig
from gateway.payments import events as e
from gateway.payments.session import Session, State
from gateway.runtime import terminal_calls
from gateway.runtime.engine_host import EngineHost, Handled
from gateway.store import Store
from tests.attack.round3_rig import MC, make_host
from tests.attack.test_attack_release_evidence import HALF, SID, WAIT, _booked_nothing, _lost
from tests.nexo import conftest as nexo_rigs
from tests.nexo.conftest import MakeRig
from tests.payments.fixtures import T0, Clock, at
from tests.payments.fixtures import terminal_result as res
from tests.runtime.runner_rig import runner_rig

make_rig = nexo_rigs.make_rig  # the nexo POI simulator's fixture, for the nexo probe


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


def _s2_refunding_all(host: EngineHost, clock: Clock) -> Session | None:
    """Ours (hold 7 of 50.00) charging beside s2, which captured 50.00 (receipt 10) after three
    hours and is asked to refund all of it (a corrected CDR of 0): s2 as the refund left it."""
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
    return host.handle(ask).session


def test_another_sessions_refund_of_the_same_amount_is_no_evidence(tmp_path: Path) -> None:
    """s2 captured 50.00 (a price above its hold) and refunded all of it (a corrected CDR of
    0): the terminal's last result is that refund, receipt 11, 50.00 = our hold's amount. The
    refund's receipt is on s2's refund, not on a hold, and s2 lost nothing: our lost release
    must not be booked from it on one stale list."""
    host, clock, store = make_host(tmp_path)
    try:
        s2 = _s2_refunding_all(host, clock)
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
        s2 = _s2_refunding_all(host, clock)
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


def test_a_lost_result_on_another_terminal_leaves_the_evidence_to_us(tmp_path: Path) -> None:
    """The fixes must not over-block: s2 on terminal T2 lost a result; T1's last result
    (receipt 9, 0 released) cannot be s2's, so our release on T1 is booked on it at once."""
    host, clock, store = make_host(tmp_path)
    try:
        for ev in (
            e.CardPresented("s2", "card", "E2", "T2", "EUR"),
            res("preauthorize", Outcome.UNKNOWN, None, None, sid="s2"),
        ):
            host.handle(ev)
        s2 = host.load("s2")
        assert s2 is not None and s2.lost_results
        clock.advance(60)
        _lost_release_at(host, SID, 7)
        last = e.LastResult(approved=True, ref="9", amount_minor=0)
        s = host.handle(e.OpenPreauthsReported(SID, "q1", (), last=last)).session
        assert s is not None and s.state is State.VOIDED and s.holds[0].booking_ref == "9"
    finally:
        store.close()


# ---- 9. ZVT end to end: the release's approval stored, the line dropped ------------------------


@pytest.mark.parametrize("variant", ["keep", "reverse"])
async def test_zvt_a_release_approved_then_the_line_dropped_ends_as_the_terminal_did(
    tmp_path: Path, variant: str
) -> None:
    """The engine, its store, the terminal runner and the ZVT driver against the simulator on
    loopback TCP: a charge without energy is released, and the line drops after the release's
    approval was stored, before our acknowledgement. The terminal either keeps the release or
    undoes it (ZVT 2.2.8, the pre-auth open again). The session must end as the terminal did:
    released exactly when the terminal released, never booked released with the hold open,
    and the hold never left to a second owner."""
    config = SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0)
    config.unacked_on_close = variant  # type: ignore[assignment]
    async with runner_rig(tmp_path, config) as rig:
        dropped: list[str] = []

        def process(ev: e.Event) -> Handled:
            handled = rig.host.handle(ev)
            if (
                not dropped
                and isinstance(ev, e.TerminalResultArrived)
                and ev.provisional
                and ev.operation is e.Operation.RELEASE
            ):
                rig.lines[-1]._writer.transport.abort()  # type: ignore[attr-defined]
                dropped.append(ev.event_id)
            return handled

        runner, heard = rig.runner(process=process)
        await runner.register()
        async with asyncio.timeout(60):
            await rig.run(runner, heard, e.CardPresented(SID, "card", "E1", "T1", "EUR"))
            await rig.run(runner, heard, e.ChargerStarted(SID, "st", 1000))
            await rig.run(
                runner, heard, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=1000)
            )
            assert dropped, "the release was never approved"
            for n in range(6):  # the session's own timers, as the daemon fires them
                s = rig.host.load(SID)
                assert s is not None
                if s.final:
                    break
                assert s.timer is not None, s.state  # a next action and a deadline
                rig.clock.now = max(rig.clock.now, s.timer[1])
                await rig.run(runner, heard, e.TimerFired(SID, f"t{n}", s.timer[0]))
        s = rig.host.load(SID)
        assert s is not None
        assert s.state is State.VOIDED, (s.state, s.notes)
        preauths = [t for t in rig.sim.state.transactions.values() if t.kind == "preauth"]
        assert [t.state for t in preauths] == ["reversed"]  # the terminal released it, once
        assert s.released_minor == preauths[0].amount
        assert rig.host.sweep("T1", (), "EUR", "sweep") == []
