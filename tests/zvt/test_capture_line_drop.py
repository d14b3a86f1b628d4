"""Issue 26 item 5 end to end: the engine, its store, the terminal runner and the ZVT driver
against the simulator on loopback TCP, with the line dropped after the capture's approval
(stored by us, never acknowledged). The terminal either keeps the capture (a variant the crash
campaign's terminal plays) or reverses it (ZVT 2.2.8); either way the session must end as the
terminal did, and its outcome must say the same."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.money import Money
from drivers.sim.ports import Port, serve_tcp
from drivers.sim.terminal import SimConfig, SimTerminal
from drivers.transport.tcp import TcpTransport
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
from gateway.ocpi.fac import fac_from_outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.refunds import RefundStatus
from gateway.payments.routing import Health
from gateway.payments.session import State
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.terminal_runner import TerminalRunner
from gateway.store import Store
from tests.payments.fixtures import Clock, policy

MC = {"brand": "MasterCard", "masked_pan": "541333******0074"}


@pytest.mark.parametrize("variant", ["keep", "reverse"])
@pytest.mark.parametrize("dropping", [e.Operation.CAPTURE, e.Operation.REVERSAL])
async def test_an_approval_then_the_line_dropped_ends_as_the_terminal_did(
    tmp_path: Path, variant: str, dropping: e.Operation
) -> None:
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0))
    sim.config.unacked_on_close = variant  # type: ignore[assignment]
    lines: list[Port] = []

    async def serve(port: Port) -> None:
        lines.append(port)
        await sim.serve(port, serial=False)

    server = await serve_tcp("127.0.0.1", 0, serve)
    tcp_port = server.sockets[0].getsockname()[1]
    driver = ZvtTerminal(
        "T1",
        TcpTransport("127.0.0.1", tcp_port),
        serial_framing=False,
        options=ZvtOptions(password="123456", t3=2.0, t4=3.0),
    )
    store = Store.open(tmp_path / "evpay.sqlite3")
    clock = Clock(datetime.now(UTC))
    host = EngineHost(store, policy(), clock)
    heard: list[e.Event] = []
    dropped: list[str] = []  # once: the retry's line holds

    def process(ev: e.Event) -> object:
        handled = host.handle(ev)
        if (
            not dropped
            and isinstance(ev, e.TerminalResultArrived)
            and ev.provisional
            and ev.operation is dropping
        ):  # the line drops after the approval is stored, before our acknowledgement
            lines[-1]._writer.transport.abort()  # type: ignore[attr-defined]
            dropped.append(ev.event_id)
        return handled

    runner = TerminalRunner(
        name="T1",
        terminal=driver,
        host=host,
        board={},
        health=Health(),
        take=heard.append,
        process=process,  # type: ignore[arg-type]
        dispatch=lambda _: None,
        currency="EUR",
        register_timeout_s=5.0,
    )
    try:
        await runner.register()

        async def run(ev: e.Event) -> None:
            todo = list(host.handle(ev).commands)
            while todo:
                cmd = todo.pop(0)
                if isinstance(cmd, c.TerminalCommand):
                    await runner.execute(cmd)
                    while heard:
                        todo += host.handle(heard.pop(0)).commands

        async with asyncio.timeout(60):
            await run(e.CardPresented("s1", "card", "E1", "T1", "EUR"))
            await run(e.ChargerStarted("s1", "st", 1000))
            await run(e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=3000))
            s = host.load("s1")
            assert s is not None
            if variant == "reverse" and dropping is e.Operation.CAPTURE:  # open again: retried
                assert s.state is State.CAPTURE_RETRY and s.captured_minor == 0
                clock.advance(60)
                await run(e.TimerFired("s1", "retry", e.TimerKind.RETRY))
            if dropping is e.Operation.REVERSAL:
                await refund_dropped(run, host, sim, variant)
                return
        s = host.load("s1")
        assert s is not None
        booked = [t for t in sim.state.transactions.values() if t.kind == "booking"]
        assert booked and booked[-1].state == "booked"  # the terminal has the money
        assert s.state is State.COMPLETED and s.captured_minor == booked[-1].amount
        assert s.bill.owed_minor == 0
        (out,) = store.outbox.list(kind="session.outcome")
        fac = fac_from_outcome({**out.payload, "invoicer": "cpo"}, datetime.now(UTC))
        assert fac is not None and fac.capture_status_code == "SUCCESS"  # as the terminal did
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
        store.close()


async def refund_dropped(
    run: Callable[[e.Event], Awaitable[None]], host: EngineHost, sim: SimTerminal, variant: str
) -> None:
    """The capture went through; its refund (a reversal of today's payment) is approved and
    the line drops before our acknowledgement."""
    done = host.load("s1")
    assert done is not None and done.state is State.COMPLETED
    whole = done.captured_minor  # the whole payment, batch open: a reversal (06 30)
    await run(e.RefundRequested(session_id="s1", event_id="r", amount_minor=whole, reason="fault"))
    s = host.load("s1")
    assert s is not None and s.refunds
    (refund,) = s.refunds
    (reversal,) = [t for t in sim.state.transactions.values() if t.kind == "reversal"]
    assert refund.ref == str(reversal.receipt)  # never lost
    if variant == "keep":  # the terminal stood by it, and said so when asked
        assert reversal.state == "booked" and refund.status is RefundStatus.DONE
        assert s.refunded_minor == whole
    else:  # reversed by the terminal: unknown to us, listed, nothing given back in the books
        assert reversal.state == "reversed" and refund.status is RefundStatus.UNKNOWN
        assert s.refunded_minor == 0


async def test_after_a_restart_the_last_result_is_asked_before_another_session_starts(
    tmp_path: Path,
) -> None:
    """The daemon dies after the terminal captured for s1 and before the result was stored.
    After the restart a new driver (s2) is quicker at the terminal than s1's enquiry: the
    runner asked the terminal's last result first, and s1 is judged on that snapshot."""
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0))
    server = await serve_tcp("127.0.0.1", 0, lambda p: sim.serve(p, serial=False))
    tcp_port = server.sockets[0].getsockname()[1]
    drivers: list[ZvtTerminal] = []
    store = Store.open(tmp_path / "evpay.sqlite3")
    clock = Clock(datetime.now(UTC))
    host = EngineHost(store, policy(), clock)

    def runner(register_timeout_s: float = 5.0) -> tuple[TerminalRunner, list[e.Event]]:
        driver = ZvtTerminal(
            "T1",
            TcpTransport("127.0.0.1", tcp_port),
            serial_framing=False,
            options=ZvtOptions(password="123456", t3=2.0, t4=3.0),
        )
        drivers.append(driver)
        heard: list[e.Event] = []
        made = TerminalRunner(
            name="T1",
            terminal=driver,
            host=host,
            board={},
            health=Health(),
            take=heard.append,
            process=host.handle,
            dispatch=lambda _: None,
            currency="EUR",
            register_timeout_s=register_timeout_s,
        )
        return made, heard

    async def run(r: TerminalRunner, heard: list[e.Event], ev: e.Event) -> list[c.Command]:
        todo = list(host.handle(ev).commands)
        left: list[c.Command] = []
        while todo:
            cmd = todo.pop(0)
            if isinstance(cmd, c.TerminalCommand):
                await r.execute(cmd)
                while heard:
                    todo += host.handle(heard.pop(0)).commands
            else:
                left.append(cmd)
        return left

    try:
        async with asyncio.timeout(60):
            first, heard = runner()
            await first.register()
            await run(first, heard, e.CardPresented("s1", "card", "E1", "T1", "EUR"))
            await run(first, heard, e.ChargerStarted("s1", "st", 1000))
            stop = e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=3000)
            (capture,) = [x for x in host.handle(stop).commands if isinstance(x, c.Capture)]
            done = await drivers[-1].capture(  # the terminal captures; the daemon dies unheard
                capture.ref,
                Money(capture.held_minor, "EUR"),
                Money(capture.amount_minor, "EUR"),
                capture.reference,
            )
            assert done.approved
            await drivers[-1].close()
            clock.advance(60)

            # the restart: a new runner, and a new session quicker than s1's enquiry
            gated, _ = runner(register_timeout_s=0.2)
            busy: list[e.Event] = []
            gated.take = busy.append
            await gated.execute(
                c.Preauthorize(
                    key="s0:pre",
                    session_id="s0",
                    terminal="T1",
                    amount_minor=5000,
                    currency="EUR",
                    reference="s0",
                )
            )  # not registered, not asked: a new session does not start
            assert isinstance(busy[0], e.TerminalResultArrived)
            assert busy[0].outcome.value == "busy" and "last result" in busy[0].message
            second, heard = runner()
            await second.register()
            await run(second, heard, e.CardPresented("s2", "card", "E2", "T1", "EUR"))
            await run(second, heard, e.Resumed("s1", "boot"))
        s1 = host.load("s1")
        assert s1 is not None and s1.state is State.COMPLETED
        assert s1.captured_minor == capture.amount_minor and s1.holds[0].booking_ref == (done.ref)
    finally:
        for d in drivers:
            await d.close()
        server.close()
        await server.wait_closed()
        store.close()
