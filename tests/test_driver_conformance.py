"""The driver conformance suite: what the engine expects of EVERY terminal driver, run against
each driver with its own simulator (ZVT on a real pty, nexo over loopback HTTP XML).

The expectations (drivers/base.py says why):
- a lost answer is ``UNKNOWN`` — or, where the driver can ask before it returns, the answer it
  got by asking — and is resolved by asking the terminal; the command is never repeated blindly;
- a capture above the hold is refused before it is sent, and nothing is booked (the refusal
  is typed: ZVT raises ``DriverError``, nexo answers ``ERROR`` — the port does not yet say
  which, so the engine must take both);
- a release of a reference the terminal does not know is a typed ``ERROR`` (not UNKNOWN, not an
  exception, nothing moved);
- a result is stored before it is acknowledged: the ``PersistHook`` gets the result, and has
  returned, before the terminal is told it arrived (ZVT: the ECR's 80 00 to the 04 0F; nexo:
  the driver forgets the request's ServiceID — until then a restart asks TransactionStatus for
  it — and returns; what a POI POSTs to the sale system, events, display and print, carries no
  result, so no HTTP answer there acknowledges one);
- every command has a deadline: a terminal that goes silent gives UNKNOWN in bounded time.
A driver that does not meet one is marked ``xfail(strict=True)`` with the reason, so the day it
does, the mark must go.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.base import Outcome, PaymentTerminal, TerminalResult
from drivers.errors import DriverError
from drivers.money import Money
from drivers.nexo import messages as nm
from drivers.nexo.asyncio.client import NexoOptions
from drivers.nexo.asyncio.terminal import NexoTerminal
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from drivers.transport.serial import SerialTransport
from drivers.transport.url import SerialUrl
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal

EUR20, EUR25, EUR10 = Money(2000, "EUR"), Money(2500, "EUR"), Money(1000, "EUR")


@dataclass
class Subject:
    """One driver with its simulator, and the simulator's side of each check."""

    protocol: str
    terminal: PaymentTerminal
    lose_next_answer: Callable[[], None]  # the terminal acts, then its answer is lost
    go_silent: Callable[[], None]  # the next command is never answered
    holds: Callable[[], int]  # pre-authorisations the terminal made
    booked_minor: Callable[[], int]  # what the terminal booked
    asked: Callable[[], bool]  # the driver asked the terminal what happened
    acknowledged: Callable[[], int]  # money results the terminal side counts as delivered
    deadline_s: float  # the longest a command may take with these settings


@pytest.fixture
async def zvt() -> AsyncIterator[Subject]:
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0))
    serving = asyncio.create_task(sim.serve_line(port))
    options = ZvtOptions(password="123456", t3=2.0, t4=3.0)
    transport = SerialTransport(SerialUrl(port.slave_path))
    term = ZvtTerminal("t1", transport, serial_framing=True, options=options)
    assert (await term.connect()).approved
    txns = sim.state.transactions
    yield Subject(
        "zvt",
        term,
        lambda: sim.config.outcomes.append("power_loss"),
        lambda: sim.config.outcomes.append("disconnect"),
        lambda: sum(1 for t in txns.values() if t.kind == "preauth"),
        lambda: sum(t.booked for t in txns.values()),
        lambda: False,  # ZVT cannot ask inside the command: the caller asks afterwards
        lambda: sim.state.results_acknowledged,  # 04 0F answered 80 00
        deadline_s=options.t3 + options.t4 + 2,
    )
    await term.close()
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await port.close()


@pytest.fixture
async def nexo(tmp_path: Path) -> AsyncIterator[Subject]:
    poi = NexoPoi(PoiConfig(encoding="xml"))
    runner, port = await serve_nexo_poi(poi)
    options = NexoOptions(
        url=f"http://127.0.0.1:{port}/EPASSaleToPOI/3.1",
        poi_id=poi.config.poi_id,
        timeout_s=1.0,
        quick_timeout_s=1.0,
        retry_s=0.05,
        state_path=tmp_path / "nexo.json",
    )
    term = NexoTerminal("n1", options)
    assert (await term.connect()).approved

    def silent() -> None:
        poi.config.delay_s = 3 * options.timeout_s + 3  # beyond every deadline below

    def lose() -> None:
        poi.config.lose_answers = 1

    def delivered() -> int:
        """Money requests the POI got whose ServiceID the driver's state file no longer keeps
        (a restart would not ask about them: their results are taken as stored)."""
        money = (nm.PaymentRequest, nm.ReversalRequest)
        sent = {m.header.service_id for m in poi.requests if isinstance(m.body, money)}
        state = json.loads(options.state_path.read_text()) if options.state_path else {}
        kept = {f["service_id"] for f in state.get("tracker", {}).get("in_flight", [])}
        return len(sent - kept)

    yield Subject(
        "nexo",
        term,
        lose,
        silent,
        lambda: sum(1 for t in poi.ledger.values() if t.kind == "reservation"),
        lambda: int(poi.booked() * 100),
        lambda: any(isinstance(m.body, nm.TransactionStatusRequest) for m in poi.requests),
        delivered,
        deadline_s=options.timeout_s + 2 * options.quick_timeout_s + 2,
    )
    poi.config.delay_s = 0
    await term.close()
    await runner.cleanup()


DRIVERS = ["zvt", "nexo"]


def known_gap(protocol: str, reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"{protocol}: {reason}")


@pytest.fixture(params=DRIVERS)
def subject(request: pytest.FixtureRequest) -> Subject:
    found: Subject = request.getfixturevalue(request.param)
    return found


async def test_a_lost_answer_is_unknown_and_resolved_by_asking(subject: Subject) -> None:
    t = subject.terminal
    subject.lose_next_answer()
    lost = await t.preauthorize(EUR20, "CONF-1")
    if lost.outcome is not Outcome.UNKNOWN:  # the driver asked before it returned
        assert subject.asked() and lost.approved and lost.amount == EUR20, lost
    asked = await t.open_preauthorizations()  # the engine asks; it never repeats the command
    assert asked.approved and len(asked.open_refs) == 1, asked
    assert subject.holds() == 1  # the terminal made one hold: nothing was sent twice
    release = await t.release(asked.open_refs[0], EUR20)
    assert release.approved and (await t.open_preauthorizations()).open_refs == ()


async def test_a_capture_above_the_hold_is_refused(subject: Subject) -> None:
    t = subject.terminal
    pre = await t.preauthorize(EUR20, "CONF-2")
    assert pre.approved and pre.ref is not None
    refusal: object
    try:  # refused before anything is sent: ZVT raises, nexo answers ERROR (both typed)
        refusal = (await t.capture(pre.ref, EUR20, EUR25, "CONF-2")).outcome
    except DriverError as exc:
        refusal = exc
    assert refusal is Outcome.ERROR or "exceeds the hold" in str(refusal), refusal
    assert subject.booked_minor() == 0
    capture = await t.capture(pre.ref, EUR20, EUR10, "CONF-2")  # the hold is intact
    assert capture.approved and subject.booked_minor() == 1000


async def test_a_release_of_an_unknown_reference_is_a_typed_error(subject: Subject) -> None:
    t = subject.terminal
    pre = await t.preauthorize(EUR20, "CONF-3")
    assert pre.approved
    unknown = await t.release("4242", EUR10)
    assert unknown.outcome is Outcome.ERROR and not unknown.unreachable, unknown
    assert subject.holds() == 1 and subject.booked_minor() == 0
    assert (await t.open_preauthorizations()).open_refs == (pre.ref,)


async def test_a_result_is_stored_before_it_is_acknowledged(subject: Subject) -> None:
    """The hook waits a while before it returns: a driver that told the terminal first would
    have been heard by then (on a pty the 80 00 arrives in milliseconds)."""
    t = subject.terminal
    seen: list[tuple[str, Outcome, int]] = []
    base = subject.acknowledged()

    async def persist(result: TerminalResult) -> None:
        await asyncio.sleep(0.3)
        seen.append((result.operation, result.outcome, subject.acknowledged() - base))

    pre = await t.preauthorize(EUR20, "CONF-5", persist)
    assert pre.approved and pre.ref is not None, pre
    assert seen == [("preauthorize", Outcome.APPROVED, 0)]  # stored, not yet acknowledged
    assert subject.acknowledged() - base == 1  # acknowledged once stored
    capture = await t.capture(pre.ref, EUR20, EUR10, "CONF-5", persist)
    assert capture.approved and subject.booked_minor() == 1000, capture
    assert seen[1:] == [("capture", Outcome.APPROVED, 1)]
    assert subject.acknowledged() - base == 2


@pytest.mark.timeout(120)
async def test_every_command_has_a_deadline(subject: Subject) -> None:
    t = subject.terminal
    subject.go_silent()
    started = time.monotonic()
    async with asyncio.timeout(60):  # a hang guard far above any deadline
        silent = await t.preauthorize(EUR20, "CONF-4")
    took = time.monotonic() - started
    assert silent.outcome in (Outcome.UNKNOWN, Outcome.ERROR), silent
    assert took <= subject.deadline_s, f"{subject.protocol}: {took:.1f} s"
