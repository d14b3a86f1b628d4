"""Issue 26: a terminal refund still ``sent`` after a daemon restart (its command went out, the
crash lost the answer) is asked about at the next start, never sent again: the engine worker
on a real SQLite store against the ZVT simulator on loopback TCP. The refund is ``done`` when the
terminal repeats the approval stored before the crash, else ``unknown`` and listed by
reconciliation until a person settles it; the terminal never sees a second reversal."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from drivers.base import TerminalResult
from drivers.money import Money
from drivers.sim.terminal import SimConfig
from drivers.transport.tcp import TcpTransport
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.reconcile import session_facts
from gateway.payments.refunds import RefundStatus
from gateway.payments.session import Session, State
from gateway.runtime.charger import SimulatedCharger
from gateway.runtime.engine_worker import EngineWorker
from gateway.runtime.terminal_calls import result_event
from tests.runtime.runner_rig import RunnerRig, runner_rig


async def completed_with_refund_sent(
    rig: RunnerRig, *, part: bool = False
) -> tuple[Session, c.RefundPayment]:
    """s1 captured on the terminal; a reversal of it requested (stored ``sent``), not yet run;
    with ``part``, a card-present refund (06 31) of part of it."""
    runner, heard = rig.runner()
    await runner.register()
    await rig.run(runner, heard, e.CardPresented("s1", "card", "E1", "T1", "EUR"))
    await rig.run(runner, heard, e.ChargerStarted("s1", "st", 1000))
    await rig.run(runner, heard, e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=3000))
    done = rig.host.load("s1")
    assert done is not None and done.state is State.COMPLETED and done.captured_minor
    amount = done.captured_minor - (1 if part else 0)
    asked = e.RefundRequested(session_id="s1", event_id="r", amount_minor=amount, reason="fault")
    (cmd,) = [x for x in rig.host.handle(asked).commands if isinstance(x, c.RefundPayment)]
    assert cmd.method == ("refund" if part else "reversal")
    return done, cmd


async def restarted(rig: RunnerRig) -> Session:
    """The daemon started again (a new driver, the engine worker): run until s1's refund is no
    longer ``sent``; the session as stored then."""
    driver = ZvtTerminal(
        "T1",
        TcpTransport("127.0.0.1", rig.port),
        serial_framing=False,
        options=ZvtOptions(password="123456", t3=2.0, t4=3.0),
    )
    rig.drivers.append(driver)
    worker = EngineWorker(
        rig.host, {"T1": driver}, SimulatedCharger(["E1"]), {"E1": EngineWorker.route("T1", "EUR")}
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        async with asyncio.timeout(20):
            while True:
                s = rig.host.load("s1")
                assert s is not None
                if s.refunds[0].status is not RefundStatus.SENT:
                    return s
                await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.gather(task, return_exceptions=True)


def reversals(rig: RunnerRig) -> list[str]:
    return [t.state for t in rig.sim.state.transactions.values() if t.kind == "reversal"]


async def test_a_refund_whose_stored_approval_the_terminal_repeats_is_done(
    tmp_path: Path,
) -> None:
    config = SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0)
    async with runner_rig(tmp_path, config) as rig:
        done, cmd = await completed_with_refund_sent(rig)

        async def persist(result: TerminalResult) -> None:  # stored before our acknowledgement
            held = result_event(cmd, f"{cmd.key}:a:held", result)
            rig.host.handle(replace(held, provisional=True))

        assert cmd.ref is not None
        reversal = await rig.drivers[-1].reverse(cmd.ref, persist)
        assert reversal.approved  # the terminal reversed; the daemon died before it heard so
        await rig.drivers[-1].close()
        rig.clock.advance(60)
        stored = rig.host.load("s1")
        assert stored is not None and stored.refunds[0].status is RefundStatus.SENT
        assert stored.refunds[0].ref == reversal.ref

        s = await restarted(rig)
        (refund,) = s.refunds
        assert refund.status is RefundStatus.DONE and refund.ref == reversal.ref
        assert s.refunded_minor == done.captured_minor
        (told,) = rig.store.outbox.list(kind="session.refund", limit=10)
        assert told.payload["amount_minor"] == done.captured_minor
        assert reversals(rig) == ["booked"]  # asked, never reversed again


@pytest.mark.parametrize("reached", [True, False])
async def test_a_refund_without_evidence_becomes_unknown_and_is_listed(
    tmp_path: Path, reached: bool
) -> None:
    """No stored approval: whether the terminal made the refund (``reached``) or never got it,
    the restart cannot prove it: ``unknown``, a reconciliation finding, never sent again."""
    config = SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0)
    async with runner_rig(tmp_path, config) as rig:
        _, cmd = await completed_with_refund_sent(rig)
        if reached:  # the terminal reversed it; the crash came before anything was stored
            assert cmd.ref is not None
            assert (await rig.drivers[-1].reverse(cmd.ref)).approved
        await rig.drivers[-1].close()
        rig.clock.advance(60)

        s = await restarted(rig)
        (refund,) = s.refunds
        assert refund.status is RefundStatus.UNKNOWN and s.refunded_minor == 0
        assert "restart" in refund.message and "journal" in refund.message
        assert not rig.store.outbox.list(kind="session.refund", limit=10)
        row = rig.store.session("s1")
        assert row is not None and session_facts(row).refunds_unsettled == 1
        assert reversals(rig) == (["booked"] if reached else [])  # never sent a second time


async def test_a_card_present_refund_repeated_is_unknown_its_card_not_said(
    tmp_path: Path,
) -> None:
    """06 31 pays the card presented, and the terminal's repeat names no card: the stored
    approval repeated proves the money left, not that it reached the driver's card."""
    config = SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0)
    async with runner_rig(tmp_path, config) as rig:
        _, cmd = await completed_with_refund_sent(rig, part=True)

        async def persist(result: TerminalResult) -> None:
            held = result_event(cmd, f"{cmd.key}:a:held", result)
            rig.host.handle(replace(held, provisional=True))

        paid = await rig.drivers[-1].refund(Money(cmd.amount_minor, "EUR"), persist)
        assert paid.approved
        await rig.drivers[-1].close()
        rig.clock.advance(60)

        s = await restarted(rig)
        (refund,) = s.refunds
        assert refund.status is RefundStatus.UNKNOWN and refund.ref == paid.ref
        assert "not the card" in refund.message and s.refunded_minor == 0
        assert not rig.store.outbox.list(kind="session.refund", limit=10)
        refunds = [t for t in rig.sim.state.transactions.values() if t.kind == "refund"]
        assert len(refunds) == 1  # asked, never paid a second time
