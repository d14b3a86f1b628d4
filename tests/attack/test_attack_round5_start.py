"""Round-5 attack (issue 26), part 2: the engine worker at a start. The sessions to resume and
the refunds still ``sent`` are listed before the first terminal registers
(engine_worker._begin); the terminal runner's own snapshot list (``_resuming``) is taken when
its terminal registers. Real parts: the ZVT simulator on loopback TCP, a second terminal that
never answers (its registration takes its whole deadline), the simulated charger, a real
SQLite store; the previous run is played by a runner on its own driver, then dropped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drivers.base import Outcome, TerminalResult
from drivers.sim.ports import serve_tcp
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.charger import ChargeStopped
from gateway.payments.refunds import RefundStatus
from gateway.payments.session import Session, State
from gateway.runtime.charger import SimulatedCharger
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_parts import TerminalFacts
from gateway.runtime.engine_worker import EngineWorker
from gateway.runtime.terminal_calls import result_event
from gateway.store import Store
from tests.helpers import free_port, until
from tests.payments.fixtures import DAY_TARIFF, policy
from tests.payments.fixtures import terminal_result as res
from tests.runtime.runner_rig import RunnerRig, runner_rig
from tests.runtime.test_resume_this_run import silent, zvt

CONFIG = SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0)


async def charging_last_run(rig: RunnerRig, sid: str = "s1", evse: str = "E1") -> Session:
    """The previous run: ``sid`` holds 50.00 on T1 (a real pre-auth) and charges; then dies."""
    runner, heard = rig.runner()
    await runner.register()
    await rig.run(runner, heard, e.CardPresented(sid, "card", evse, "T1", "EUR"))
    await rig.run(runner, heard, e.ChargerStarted(sid, "st", 1000))
    s = rig.host.load(sid)
    assert s is not None and s.state is State.CHARGING
    await rig.drivers[-1].close()
    return s


@dataclass
class Started:
    engine: EngineWorker
    host: EngineHost
    charger: SimulatedCharger


@contextlib.asynccontextmanager
async def restarted(rig: RunnerRig, *, kill: bool = False) -> AsyncIterator[Started]:
    """The next run, started: T1 (the simulator) registers at once, T2 (silent) takes its whole
    1 s deadline, so ``_begin`` is still registering for about a second. E1 and E3 pay at T1,
    E2 at T2. With ``kill``, the run ends as a killed process does: every task cancelled."""
    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    host = EngineHost(rig.store, policy(tariffs={"*": DAY_TARIFF}), lambda: datetime.now(UTC))
    charger = SimulatedCharger(["E1", "E2", "E3"])
    t1, t2 = zvt("T1", rig.port), zvt("T2", mute.sockets[0].getsockname()[1])
    engine = EngineWorker(
        host,
        {"T1": t1, "T2": t2},
        charger,
        {
            "E1": EngineWorker.route("T1", "EUR"),
            "E2": EngineWorker.route("T2", "EUR"),
            "E3": EngineWorker.route("T1", "EUR"),
        },
        TerminalFacts(register_timeout_s=1.0),
    )
    stopping = asyncio.Event()
    run = asyncio.create_task(engine.run(stopping))
    try:
        await until(lambda: engine.status.terminal_state.get("T1", (False, ""))[0])
        assert not engine.status.registered.is_set()  # T2 is still registering
        yield Started(engine, host, charger)
    finally:
        if kill:
            for handle in engine._loop.timers.values():
                handle.cancel()
            for task in (run, *engine._loop.tasks):
                task.cancel()
        stopping.set()
        await asyncio.gather(run, *engine._loop.tasks, return_exceptions=True)
        await charger.close()
        for driver in (t1, t2):
            await driver.close()
        mute.close()


def captures(rig: RunnerRig) -> list[str]:
    kinds = ("booking",)
    return [t.state for t in rig.sim.state.transactions.values() if t.kind in kinds]


async def test_a_stop_heard_while_registering_is_captured_once_and_not_taken_as_lost(
    tmp_path: Path,
) -> None:
    """s1 charged in the last run; its charger reports the stop while T2 still registers. The
    stop is queued before s1's resume: the capture goes out, then the resume finds s1
    CAPTURING. It must not take that capture (of this run) as lost."""
    async with runner_rig(tmp_path, CONFIG) as rig:
        await charging_last_run(rig)
        async with restarted(rig) as started:
            stop = ChargeStopped(
                evse="E1", session_id="s1", meter_wh=4000, session_energy_wh=3000, reason="full"
            )
            started.charger._emit(stop)
            await until(started.engine.status.registered.is_set)
            await until(lambda: (s := started.host.load("s1")) is not None and s.final, 30)
        s = started.host.load("s1")
        assert s is not None
        assert s.state is State.COMPLETED and s.captured_minor > 0, s.notes
        assert len(captures(rig)) == 1
        steps = [j["data"] for j in rig.store.journal("s1") if j["kind"] == "Resumed"]
        # the capture of this run was taken as lost: its provisional approval is then "not
        # awaited" (a line drop after it would leave a capture the terminal made unconfirmed)
        assert not [d for d in steps if d["from"] != "charging"], steps
        assert s.notes == ()


async def test_a_pay_request_while_registering_at_an_evse_open_from_the_last_run_is_refused(
    tmp_path: Path,
) -> None:
    """One session per EVSE: s1 (last run) still charges at E1 when a pay request for E1
    comes in while T2 registers (T1 is up, so admission is open)."""
    async with runner_rig(tmp_path, CONFIG) as rig:
        await charging_last_run(rig)
        async with restarted(rig) as started:
            answer = started.engine.request_payment("E1", "again")
            assert answer.status == 409 and answer.session_id == "s1", answer
            await until(started.engine.status.registered.is_set)
            await until(started.engine.status.idle.is_set)
        assert [r["id"] for r in rig.store.sessions(open_only=True, limit=10)] == ["s1"]
        assert len(rig.sim.open_preauths()) == 1  # no second hold


async def test_a_session_of_this_run_on_t1_is_not_in_t1s_resume_snapshot(tmp_path: Path) -> None:
    """T1's ``_resuming`` is taken when T1 registers; a session started at T1 while T2 still
    registers is not in it (its enquiry, if any, must ask the terminal afresh)."""
    async with runner_rig(tmp_path, CONFIG) as rig:
        await charging_last_run(rig)
        async with restarted(rig) as started:
            answer = started.engine.request_payment("E2", "new")  # T2 not up: refused
            assert answer.status >= 400
            runner = started.engine.runners["T1"]
            await until(runner._asked.is_set)
            assert "s1" not in runner._resuming  # CHARGING: nothing in flight to ask about
            started.charger.plug_in("E1")  # refused: s1 holds E1
            await until(started.engine.status.registered.is_set)
            assert runner._resuming <= {"s1"}


async def test_killed_while_registering_its_new_session_is_resumed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A pay request at E3 (T1 up) starts s3 while T2 registers; the process is killed while
    the card is awaited. The next start finds s3 of the last run: resumed as interrupted,
    asked about, ended with nothing taken; no hold left open that no session owns."""
    config = SimConfig(password="123456", card_wait_s=1.5, result_ack_timeout_s=2.0)
    async with runner_rig(tmp_path, config) as rig:
        await charging_last_run(rig)
        async with restarted(rig, kill=True) as started:
            answer = started.engine.request_payment("E3", "k1")
            assert answer.status == 202 and answer.session_id is not None
            new = answer.session_id
            await asyncio.sleep(0.3)  # the pre-auth is at the terminal, the card awaited
        stored = rig.host.load(new)
        assert stored is not None and stored.state is State.AUTHORIZING
        async with restarted(rig) as again:
            await until(again.engine.status.registered.is_set)
            await until(lambda: (x := again.host.load(new)) is not None and x.final, 30)
            await until(again.engine.status.idle.is_set)
        s3 = again.host.load(new)
        assert s3 is not None
        assert s3.captured_minor == 0 and not s3.holds, s3.notes
        s1 = again.host.load("s1")
        assert s1 is not None and s1.state is State.CHARGING
        assert [str(n) for n in rig.sim.open_preauths()] == [s1.holds[0].ref], s3.notes


async def _completed_with_reversal_sent(rig: RunnerRig, sid: str, evse: str) -> c.RefundPayment:
    """``sid`` charged and captured at T1 by the last run; a reversal of it stored ``sent``."""
    runner, heard = rig.runner()
    await runner.register()
    await rig.run(runner, heard, e.CardPresented(sid, "card", evse, "T1", "EUR"))
    await rig.run(runner, heard, e.ChargerStarted(sid, "st", 1000))
    await rig.run(runner, heard, e.ChargerStopped(session_id=sid, event_id="sp", meter_wh=3000))
    done = rig.host.load(sid)
    assert done is not None and done.state is State.COMPLETED
    asked = e.RefundRequested(
        session_id=sid, event_id="r", amount_minor=done.captured_minor, reason="fault"
    )
    (cmd,) = [x for x in rig.host.handle(asked).commands if isinstance(x, c.RefundPayment)]
    assert cmd.method == "reversal"
    return cmd


async def test_two_sent_refunds_on_one_terminal_only_the_repeated_one_is_done(
    tmp_path: Path,
) -> None:
    """s1's and s2's reversals both stored ``sent``; s1's went out, approved and stored before
    our acknowledgement, s2's never reached the terminal. The start asks once per refund with
    the same snapshot: s1 done, s2 unknown, and the terminal saw one reversal only."""
    async with runner_rig(tmp_path, CONFIG) as rig:
        first = await _completed_with_reversal_sent(rig, "s1", "E1")
        await _completed_with_reversal_sent(rig, "s2", "E3")

        async def persist(result: TerminalResult) -> None:
            held = result_event(first, f"{first.key}:a:held", result)
            rig.host.handle(replace(held, provisional=True))

        assert first.ref is not None
        assert (await rig.drivers[-1].reverse(first.ref, persist)).approved
        await rig.drivers[-1].close()
        async with restarted(rig) as started:
            await until(started.engine.status.registered.is_set)

            def settled() -> bool:
                both = [started.host.load(sid) for sid in ("s1", "s2")]
                return all(s is not None and s.refunds[0].status.value != "sent" for s in both)

            await until(settled, 20)
        s1, s2 = rig.host.load("s1"), rig.host.load("s2")
        assert s1 is not None and s2 is not None
        assert s1.refunds[0].status is RefundStatus.DONE, s1.refunds
        assert s2.refunds[0].status is RefundStatus.UNKNOWN and s2.refunded_minor == 0
        reversals = [t for t in rig.sim.state.transactions.values() if t.kind == "reversal"]
        assert [t.state for t in reversals] == ["booked"]  # nothing resent


async def test_a_terminal_back_through_an_enquiry_still_takes_pay_requests(tmp_path: Path) -> None:
    """T2 is down at the start (its registration refused, no snapshot asked). The last run's
    lost pre-auth on T2 is asked about again 1 s later; T2 is back by then, the driver
    reconnects for that enquiry and T2 is marked available. Its last result must still be
    asked (``ask_last_result``) so that money commands may start: a pay request at E2 gets
    its hold, not "the terminal's last result is not yet asked" for the rest of the run."""
    store = Store.open(tmp_path / "evpay.sqlite3")
    pol = policy(tariffs={"*": DAY_TARIFF}, retry_initial=timedelta(seconds=1))
    host = EngineHost(store, pol, lambda: datetime.now(UTC))
    host.handle(e.CardPresented("s2", "card", "E2", "T2", "EUR"))
    host.handle(res("preauthorize", Outcome.UNKNOWN, None, None, sid="s2"))
    lost = host.load("s2")
    assert lost is not None and lost.state is State.AUTH_UNKNOWN
    port = free_port()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0))
    t2 = zvt("T2", port)
    charger = SimulatedCharger(["E2"])
    engine = EngineWorker(
        host,
        {"T2": t2},
        charger,
        {"E2": EngineWorker.route("T2", "EUR")},
        TerminalFacts(register_timeout_s=1.0),
    )
    stopping = asyncio.Event()
    run = asyncio.create_task(engine.run(stopping))
    server = None
    try:
        await until(engine.status.registered.is_set)
        board = engine.status.terminal_state
        assert not board["T2"][0]  # down: refused
        server = await serve_tcp("127.0.0.1", port, lambda p: sim.serve(p, serial=False))
        await until(lambda: (s := host.load("s2")) is not None and s.final, 15)
        await until(lambda: board["T2"][0], 15)
        await asyncio.sleep(6)  # past the unavailable probe's interval
        answer = engine.request_payment("E2", "after")
        assert answer.status == 202 and answer.session_id is not None, answer
        new = answer.session_id

        def decided() -> bool:
            s = host.load(new)
            return s is not None and s.state is not State.AUTHORIZING

        await until(decided, 15)
        s = host.load(new)
        assert s is not None
        assert s.state is State.AUTHORIZED, s.notes
    finally:
        stopping.set()
        await asyncio.gather(run, return_exceptions=True)
        await charger.close()
        await t2.close()
        if server is not None:
            server.close()
        store.close()
