"""The stale tail of a killed ECR on a serial line (issue 26): the PT goes on with the dead
process's sequence and sends its frames (80 00, 06 1E 6C, a capture's 04 0F) to whoever has the
line open next. ZVT answers carry no reference to their command, so the restarted driver must
not take them for the answer of its own next money command: on opening a serial line it refuses
(NAKs) what the PT still sends and waits for silence (drivers/zvt/line_quiet.py,
docs/ZVT-VARIANTS.md section 8). TCP: a new connection carries nothing of the old one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from drivers.base import Outcome, TerminalResult
from drivers.money import Money, currency
from drivers.zvt import messages as m
from drivers.zvt.asyncio.client import SequenceOutcome
from drivers.zvt.asyncio.results import ResultReader
from drivers.zvt.asyncio.terminal import ZvtTerminal
from drivers.zvt.fields import Bmp
from drivers.zvt.line_quiet import LINE_QUIET_S, LineQuiet
from drivers.zvt.link import T2
from drivers.zvt.serial_framing import NAK, frame
from tests.zvt.conftest import Rig

EUR50 = Money(5000, "EUR")
# The simulated PT repeats an unacknowledged frame after its T2, here a little longer than the
# driver's T3 (2 s in the rig; both are 5 s in the spec): the restarted driver's registration
# runs out of time before the stale 80 00 comes again, and its next command meets it.
PT_T2_S = 3.0
QUIET_S = PT_T2_S + 0.5  # the driver's quiet period: longer than the PT's T2, as LINE_QUIET_S
ATTEMPTS = 4


async def _killed_before_reading(t: ZvtTerminal, command: m.Message) -> None:
    """The ECR process writes ``command`` and is killed before it reads anything: the PT
    accepts it (80 00) to nobody, repeats that after its T2 and goes on with the sequence."""
    loop = asyncio.get_running_loop()
    t.client.link.send_apdu(command.to_apdu().encode(), loop.time())
    await t.client.transport.write(t.client.link.data_to_send())
    await asyncio.sleep(0.05)
    await t.close()


async def _restarted(
    rig: Rig, money: Callable[[ZvtTerminal], Awaitable[TerminalResult]]
) -> TerminalResult:
    """The supervisor restarts the process: it registers and sends its next money command,
    retried a few times while the terminal is busy or the line not ready, as the engine does.
    No attempt may be answered by the dead process's frames."""
    await asyncio.sleep(0.2)
    fresh = rig.make_driver(line_quiet_s=QUIET_S)
    await fresh.connect()
    for _ in range(ATTEMPTS):
        result = await money(fresh)
        if result.outcome not in (Outcome.BUSY, Outcome.ERROR):
            return result
        await asyncio.sleep(0.5)
    return result


async def test_a_stale_abort_6c_is_not_the_next_preauthorisations_answer(rig: Rig) -> None:
    """The killed process's pre-authorisation ends at the PT with 06 1E 6C (no card in time).
    The restarted process's own pre-authorisation must be answered for itself: approved with a
    hold the terminal really holds, never aborted by the dead one's 6C."""
    rig.sim.config.link_t2_s = PT_T2_S
    rig.sim.config.card_wait_s = 0.5
    rig.sim.config.outcomes.append("timeout")  # the dead process's: 06 1E 6C
    t = rig.make_driver()
    assert (await t.connect()).approved
    command = m.pre_authorisation(2000, currency("EUR").numeric, tlv=[])
    await _killed_before_reading(t, command)
    result = await _restarted(rig, lambda d: d.preauthorize(EUR50, "ST-1"))
    assert result.approved, result
    assert result.amount == EUR50
    assert result.ref is not None and int(result.ref) in rig.sim.open_preauths()


async def test_a_stale_capture_approval_is_not_the_next_captures_answer(rig: Rig) -> None:
    """The killed process's capture of hold A is approved at the PT (its 04 0F). The restarted
    process captures hold B: its answer must be B's booking, never A's approval."""
    rig.sim.config.link_t2_s = PT_T2_S
    t = rig.make_driver()
    assert (await t.connect()).approved
    first = await t.preauthorize(EUR50, "ST-2")
    second = await t.preauthorize(EUR50, "ST-3")
    assert first.ref is not None and second.ref is not None
    stale = m.partial_reversal(int(first.ref), 5000 - 1234, currency("EUR").numeric, tlv=[])
    await _killed_before_reading(t, stale)
    held = second.ref
    result = await _restarted(rig, lambda d: d.capture(held, EUR50, Money(777, "EUR"), "ST-3"))
    booked = rig.sim.state.transactions[int(second.ref)]
    if result.approved:
        assert result.amount == Money(777, "EUR"), result
        assert (booked.state, booked.booked) == ("booked", 777), booked
    else:
        assert not result.approved and booked.state == "open"


def test_a_quiet_line_costs_the_probe_only() -> None:
    """Sans-I/O: a NAK goes out; silence for the probe window ends the wait."""
    quiet = LineQuiet(100.0)
    assert quiet.data_to_send() == bytes([NAK])
    assert not quiet.quiet(100.4) and quiet.quiet(100.5)
    assert LINE_QUIET_S > T2


def test_stale_frames_are_refused_and_the_wait_grows() -> None:
    quiet = LineQuiet(0.0, quiet_s=6.0)
    quiet.data_to_send()
    quiet.receive_data(frame(m.abort_pt(0x6C).to_apdu().encode()), 0.2)
    assert quiet.data_to_send() == bytes([NAK])  # never an ACK
    assert quiet.stale == ["061E"]
    assert not quiet.quiet(6.0) and quiet.quiet(6.2)
    quiet.receive_data(b"\x10", 59.0)  # a PT that keeps talking
    assert quiet.gave_up(60.0) and quiet.next_deadline() == 60.0


def test_a_result_in_a_registration_is_no_registration() -> None:
    """A 04 0F inside a registration is the tail of another ECR's sequence: not registered."""
    reader = ResultReader()
    reader.terminal_id, reader._currency = None, currency("EUR")
    approval = m.status_information([Bmp(0x27, b"\x00"), m.bmp_amount(1234)])
    seq = SequenceOutcome(accepted=True, results=[approval], completion=m.completion())
    result = reader._interpret("register", seq, money=False, requested=None)
    assert result.outcome is Outcome.ERROR and not result.approved
