"""Attack on "Merge zvt-stale" (issue 26): a serial line opened after the ECR was killed is
probed (one NAK, LINE_PROBE_S) and a stale tail refused (NAK) until quiet; a registration not
answered as one leaves the line unconnected (drivers/zvt/line_quiet.py, ZvtClient.quiesce,
ZvtTerminal.connect, docs/ZVT-VARIANTS.md 8). Real parts: the ZVT simulator on a real pty
(PtyPort), a raw PT on a pty for behaviours the simulator does not play, loopback TCP; the
sans-I/O engine for what the host learns of the dead run's capture."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.money import Money
from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal, _Session
from drivers.transport.serial import SerialTransport
from drivers.transport.url import SerialUrl
from drivers.zvt import messages as m
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
from drivers.zvt.fields import Bmp
from drivers.zvt.line_quiet import LINE_PROBE_S, STALE_KEPT, LineQuiet
from drivers.zvt.serial_framing import NAK, frame
from gateway.payments import events as e
from gateway.payments.model import HoldStatus
from gateway.payments.session import State
from tests.payments.fixtures import at, step
from tests.payments.test_money_correctness import SID, capturing, held, res
from tests.runtime.runner_rig import runner_rig
from tests.zvt.conftest import SIM_PASSWORD, Rig

EUR20, EUR50 = Money(2000, "EUR"), Money(5000, "EUR")
QUIET_S = 1.0  # the driver's quiet period in these rigs: longer than the simulated PT's T2
PT_T2_S = 0.6


@dataclass
class Line:
    port: PtyPort
    sim: SimTerminal

    def driver(self, **opts: object) -> ZvtTerminal:
        options = replace(ZvtOptions(password=SIM_PASSWORD, t3=2.0, t4=3.0), **opts)  # type: ignore[arg-type]
        transport = SerialTransport(SerialUrl(self.port.slave_path))
        return ZvtTerminal("t1", transport, serial_framing=True, options=options)


@pytest.fixture
async def line() -> AsyncIterator[Line]:
    """The simulator on a pty, its port at hand (to write noise into the driver's line)."""
    sim = SimTerminal(SimConfig(password=SIM_PASSWORD, card_wait_s=0.05, result_ack_timeout_s=2.0))
    sim.config.link_t2_s = PT_T2_S
    port = PtyPort()
    task = asyncio.create_task(sim.serve_line(port))
    yield Line(port, sim)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await port.close()


async def _kill_in_card_wait(t: ZvtTerminal) -> None:
    """The ECR process sends a pre-auth of 20.00, reads 80 00 (and 04 FF), and is killed while
    the PT waits for the card: the PT is silent at the next process's probe."""
    dead = asyncio.create_task(t.preauthorize(EUR20, "DEAD"))
    await asyncio.sleep(0.4)
    dead.cancel()
    await asyncio.gather(dead, return_exceptions=True)
    await t.close()


@pytest.mark.parametrize("variant", ["busy", "ignore"])
async def test_a_dead_preauth_silent_at_the_probe_never_answers_our_preauth(
    line: Line, variant: str
) -> None:
    """The dead pre-auth's card comes 2.5 s after it was sent: during our registration or our
    first pre-auth's quiet open. Whatever the PT answers meanwhile (84 9C busy, or nothing),
    our 50.00 pre-auth is answered for itself (a hold of 50.00 the terminal really holds) and
    the dead 20.00 is never ours nor left standing."""
    cfg = line.sim.config
    cfg.card_wait_s = 2.5
    if variant == "ignore":
        cfg.variants.command_while_master = "ignore"
    t = line.driver()
    assert (await t.connect()).approved
    await _kill_in_card_wait(t)
    fresh = line.driver(line_quiet_s=QUIET_S)
    first = await fresh.connect()
    assert first.outcome in (Outcome.BUSY, Outcome.ERROR)  # still in the dead sequence
    for _ in range(8):
        result = await fresh.preauthorize(EUR50, "NEW")
        if result.outcome not in (Outcome.BUSY, Outcome.ERROR):
            break
        await asyncio.sleep(0.2)
    assert result.approved and result.amount == EUR50, result
    assert result.ref is not None
    txs = line.sim.state.transactions
    assert txs[int(result.ref)].amount == 5000 and txs[int(result.ref)].state == "open"
    assert [x.state for x in txs.values() if x.amount == 2000] in ([], ["reversed"])


async def test_a_stale_intermediate_after_our_registration_is_not_our_answer(line: Line) -> None:
    """Dead pre-auth with 'please wait' 04 FF 17 messages after the card: they (and the 04 0F)
    come while our registration or the quiet open runs. The registration is never approved on
    them and the dead hold does not stand."""
    cfg = line.sim.config
    cfg.card_wait_s, cfg.please_wait = 1.2, 3
    t = line.driver()
    assert (await t.connect()).approved
    await _kill_in_card_wait(t)
    fresh = line.driver(line_quiet_s=QUIET_S)
    outcomes = []
    for _ in range(6):
        outcomes.append((await fresh.connect()).outcome)
        if outcomes[-1] is Outcome.APPROVED:
            break
    assert outcomes[-1] is Outcome.APPROVED and set(outcomes[:-1]) <= {Outcome.BUSY, Outcome.ERROR}
    assert [x.state for x in line.sim.state.transactions.values()] in ([], ["reversed"])
    assert (await fresh.status()).approved


async def test_a_stale_result_inside_a_registration_is_never_acknowledged(
    line: Line, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PT that accepts our registration (80 00) with the dead run's 04 0F still to send: the
    driver reads it as no registration (results.py) -- but must also never ACK it (section 8:
    an ACK tells the PT the stale result was delivered, and the dead run's capture or hold
    stands, unrecorded); unacknowledged, the PT reverses it (2.2.8)."""
    acked: list[bool] = []
    real = _Session.registration

    async def stale_first(self: _Session, cmd: m.Message) -> None:
        if acked:
            await real(self, cmd)
            return
        await self.send(m.ack())
        stale = [Bmp(0x27, b"\x00"), m.bmp_amount(1234), m.bmp_receipt(99)]
        acked.append(await self.result_acknowledged(stale))
        if acked[-1]:
            await self.send_expect_ack(m.completion())

    monkeypatch.setattr(_Session, "registration", stale_first)
    line.sim.config.result_ack_timeout_s = 1.0
    t = line.driver(line_quiet_s=QUIET_S)
    assert not (await t.connect()).approved
    outcomes = [(await t.connect()).outcome for _ in range(3)]
    assert acked == [False]
    assert Outcome.APPROVED in outcomes, outcomes


async def _raw_pt(port: PtyPort, answer: bytes) -> None:
    """A PT that answers every NAK it hears with ``answer`` (even idle), nothing else."""
    while True:
        data = await port.read(None)
        for _ in range(data.count(NAK)):
            await port.write(answer)


@pytest.mark.parametrize("answer", ["nak", "frame"])
async def test_a_pt_that_answers_a_lone_nak_does_not_hang_the_open(answer: str) -> None:
    """A PT that answers our probe NAK with a NAK, or repeats its last frame on every NAK (even
    idle): the open costs at most a quiet period and a PT's repeats, never LINE_QUIET_MAX_S
    (60 s: the runner's 30 s registration deadline would cancel every open, for ever)."""
    port = PtyPort()
    reply = bytes([NAK]) if answer == "nak" else frame(m.abort_pt(0x6C).to_apdu().encode())
    pt = asyncio.create_task(_raw_pt(port, reply))
    t = Line(port, SimTerminal()).driver(line_quiet_s=QUIET_S)
    try:
        async with asyncio.timeout(QUIET_S * 6):
            await t.client.open()
        assert t.client.connected
    finally:
        pt.cancel()
        await asyncio.gather(pt, return_exceptions=True)
        await t.close()
        await port.close()


def test_the_same_stale_frame_is_refused_a_bounded_number_of_times() -> None:
    """Sans-I/O: a frame repeated on every NAK gets NAKs up to the PT's own retries, then
    silence (its link gives up by T2); a new frame is refused again."""
    stale = frame(m.abort_pt(0x6C).to_apdu().encode())
    quiet = LineQuiet(0.0, quiet_s=6.0)
    quiet.data_to_send()
    naks = 0
    for i in range(10):
        quiet.receive_data(stale, 0.1 * (i + 1))
        naks += len(quiet.data_to_send())
    assert naks == 3
    quiet.receive_data(frame(m.completion().to_apdu().encode()), 1.2)
    assert quiet.data_to_send() == bytes([NAK])


def _fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def test_a_noisy_line_cancelled_by_the_runners_deadline_leaves_nothing_behind(
    line: Line,
) -> None:
    """A line that never falls quiet: the runner's registration deadline cancels connect()
    mid-quiet. The opening lock and the sequence lock are free, the client is not connected,
    no fd leaks, and once the noise stops the next connect registers."""
    before = _fds()
    stop = asyncio.Event()

    async def noise() -> None:
        while not stop.is_set():
            await line.port.write(b"\x00\x41")
            await asyncio.sleep(0.1)

    noisy = asyncio.create_task(noise())
    t = line.driver(line_quiet_s=QUIET_S)
    for _ in range(3):  # the runner retries: each try opens the line again
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await t.connect()
        assert not t._connecting.locked() and not t.client.busy and not t.client.connected
    stop.set()
    await noisy
    # the one open serial port (its fd and pyserial's two cancel pipes), no more
    assert _fds() <= before + 5
    assert (await t.connect()).approved
    await t.close()
    assert _fds() <= before


async def test_a_command_during_the_quiet_open_waits_and_runs_once(line: Line) -> None:
    """A status enquiry issued while connect() quiets the line waits for that opening (one
    registration, not two) and is answered for itself."""
    t = line.driver(line_quiet_s=QUIET_S)
    opening = asyncio.create_task(t.connect())
    await asyncio.sleep(LINE_PROBE_S / 2)
    status = await t.status()
    assert (await opening).approved and status.approved
    assert line.sim.state.commands.count("0600") == 1, line.sim.state.commands


async def test_concurrent_connects_end_connected(line: Line) -> None:
    t = line.driver(line_quiet_s=QUIET_S)
    results = await asyncio.gather(t.connect(), t.connect())
    assert all(r.approved for r in results) and t.client.connected
    assert (await t.status()).approved


async def test_tcp_open_has_no_probe(rig: Rig) -> None:
    """TCP unchanged: no NAK written, no probe wait."""
    if rig.kind != "tcp":
        pytest.skip("TCP only")
    t = rig.make_driver()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert (await t.connect()).approved
    assert loop.time() - began < LINE_PROBE_S
    assert not t.client.unsettled


def test_a_dead_capture_reversed_by_the_terminal_is_not_booked() -> None:
    """The dead run stored its capture's approval (provisional), then was killed before its
    80 00; the restarted driver NAKed the repeated 04 0F and the PT reversed it (2.2.8): the
    hold is open again, the last result is the hold's own pre-auth. The engine must not book
    the capture on its stored approval: the hold is still open, capture again later."""
    s = at(capturing(), held("capture", 655, 12, for_ref="7"), 61)
    s = at(s, res("capture", Outcome.UNKNOWN, None, None, message="lost", for_ref="7"), 61)
    assert s.state is State.CAPTURE_UNKNOWN
    last = e.LastResult(approved=True, ref="7", amount_minor=5000)
    t = step(s, e.OpenPreauthsReported(SID, "q", ("7",), last=last), 62)
    assert t.session is not None
    assert t.session.captured_minor == 0
    assert t.session.holds[0].status is HoldStatus.OPEN
    assert t.session.state is not State.COMPLETED


def test_a_babbling_line_keeps_a_bounded_record() -> None:
    """A PT that sends frames for the whole LINE_QUIET_MAX_S: what is kept of them (logged, and
    put in the failed open's message, stored as the registration's result) has a named bound."""
    quiet = LineQuiet(0.0, quiet_s=6.0)
    chatter = frame(m.abort_pt(0x6C).to_apdu().encode()) * 5000
    quiet.receive_data(chatter, 1.0)
    assert len(quiet.stale) <= STALE_KEPT and quiet.refused == 5000


async def test_a_process_killed_mid_frame_does_not_block_the_next_registration(
    line: Line,
) -> None:
    """The dead process wrote half of a pre-auth's frame: the PT's receiver is inside a frame
    when our probe NAK and registration arrive. The fresh process still registers (within a
    few tries) and no pre-auth is made from the torn frame."""
    t = line.driver()
    assert (await t.connect()).approved
    torn = frame(m.pre_authorisation(2000, 978, tlv=[]).to_apdu().encode())
    await t.client.transport.write(torn[: len(torn) // 2])
    await t.close()
    fresh = line.driver(line_quiet_s=QUIET_S)
    outcomes = []
    for _ in range(4):
        outcomes.append((await fresh.connect()).outcome)
        if outcomes[-1] is Outcome.APPROVED:
            break
    assert outcomes[-1] is Outcome.APPROVED, outcomes
    assert not line.sim.state.transactions
    assert (await fresh.preauthorize(EUR50, "AFTER")).amount == EUR50


async def test_the_runner_marks_a_noisy_serial_terminal_unavailable_in_time(
    line: Line, tmp_path: Path
) -> None:
    """The runner's registration deadline (here 1 s, 30 s by default) ends the quiet wait
    before LINE_QUIET_MAX_S: the terminal is marked unavailable in time, the loop stays
    responsive meanwhile, and once the line is quiet the next registration makes it available."""
    stop = asyncio.Event()

    async def noise() -> None:
        while not stop.is_set():
            await line.port.write(frame(m.intermediate(0x17).to_apdu().encode()))
            await asyncio.sleep(0.1)

    async with runner_rig(tmp_path, SimConfig()) as rig:
        runner, _ = rig.runner(register_timeout_s=1.0)
        runner.terminal = driver = line.driver(line_quiet_s=QUIET_S)
        rig.drivers.append(driver)
        noisy = asyncio.create_task(noise())
        loop = asyncio.get_running_loop()
        began = loop.time()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        await runner.register()
        assert loop.time() - began < 2.0 and not runner.available
        assert ticks >= 10  # the loop kept running while the line was quieted
        ticking.cancel()
        stop.set()
        await asyncio.gather(noisy, ticking, return_exceptions=True)
        await runner.register()
        assert runner.available
