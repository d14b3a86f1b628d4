"""A start resumes only the sessions the last run left open. Terminals register one after
another; once the first is up, a pay request for it starts a session of this run. Resumed with
the others, its pre-auth in flight was taken as lost and its genuine approval released as late:
the full-size crash campaign's double claim of hold 398 began so (tests/campaigns/RESULTS.md)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

from drivers.sim.ports import Port, serve_tcp
from drivers.sim.terminal import SimConfig, SimTerminal
from drivers.transport.tcp import TcpTransport
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
from gateway.payments.session import State
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_parts import TerminalFacts
from gateway.runtime.engine_worker import EngineWorker
from gateway.store import Store
from tests.helpers import until
from tests.payments.fixtures import DAY_TARIFF, policy


def zvt(name: str, port: int) -> ZvtTerminal:
    return ZvtTerminal(
        name,
        TcpTransport("127.0.0.1", port),
        serial_framing=False,
        options=ZvtOptions(password="123456", t3=10.0, t4=10.0),
    )


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A terminal that takes the connection and never answers: its registration times out."""
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()


async def test_a_session_started_while_a_later_terminal_registers_is_not_resumed(
    tmp_path: Path,
) -> None:
    # the card is presented 2 s after the pre-auth is asked: its approval comes after the resume
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=2.0))

    async def serve(port: Port) -> None:
        await sim.serve(port, serial=False)

    up = await serve_tcp("127.0.0.1", 0, serve)
    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    store = Store.open(tmp_path / "evpay.sqlite3")
    host = EngineHost(store, policy(tariffs={"*": DAY_TARIFF}), lambda: datetime.now(UTC))
    charger = SimulatedCharger(["E1", "E2"])
    t1 = zvt("T1", up.sockets[0].getsockname()[1])
    t2 = zvt("T2", mute.sockets[0].getsockname()[1])
    engine = EngineWorker(
        host,
        {"T1": t1, "T2": t2},  # registered in this order: T2 takes its whole deadline
        charger,
        {"E1": EngineWorker.route("T1", "EUR"), "E2": EngineWorker.route("T2", "EUR")},
        TerminalFacts(register_timeout_s=1.0),
    )
    stopping = asyncio.Event()
    run = asyncio.create_task(engine.run(stopping))
    try:
        board = engine.status.terminal_state
        await until(lambda: board.get("T1", (False, ""))[0])
        assert not engine.status.registered.is_set()  # T2 is still registering
        charger.plug_in("E1", EvsePlan(never_start=True))
        await until(engine.status.registered.is_set)  # T2 given up while the card is awaited
        await until(lambda: charger.authorized)
        await asyncio.sleep(1.0)  # a resume, had there been one, is handled by now
        (row,) = store.sessions(open_only=False, limit=10)
        session = host.load(row["id"])
        assert session is not None
        assert session.state is State.AUTHORIZED, session.notes
        assert not [n for n in session.notes if "late" in n or "released" in n], session.notes
    finally:
        stopping.set()
        await asyncio.gather(run, return_exceptions=True)
        for driver in (t1, t2):
            await driver.close()
        up.close()
        mute.close()
        store.close()
