"""The ECR sequence table, row by row (sans-I/O: APDUs and times in, APDUs and events out)."""

from __future__ import annotations

import pytest

from drivers.zvt import messages as m
from drivers.zvt.apdu import Apdu
from drivers.zvt.fields import Bmp
from drivers.zvt.sequences import (
    Aborted,
    Accepted,
    Completed,
    EcrSequence,
    Intermediate,
    Malformed,
    Printed,
    Rejected,
    ResultReceived,
    State,
    TimedOut,
)

ACK = m.ack().to_apdu()


def drain(ecr: EcrSequence) -> list[object]:
    out: list[object] = []
    while (e := ecr.next_event()) is not None:
        out.append(e)
    return out


def state(ecr: EcrSequence) -> State:
    """Read afresh: mypy keeps ``ecr.state`` narrowed by an assert across the calls that move it."""
    return ecr.state


def started(**kw: bool) -> EcrSequence:
    ecr = EcrSequence(t3=5.0, t4=180.0)
    ecr.start(m.pre_authorisation(2500, 978), 0.0, **kw)
    assert ecr.apdus_to_send() == [m.pre_authorisation(2500, 978).to_apdu()]
    return ecr


def test_happy_path_holds_the_result_until_confirmed() -> None:
    ecr = started()
    ecr.receive(ACK, 0.1)
    assert (
        drain(ecr) == [Accepted()]
        and state(ecr) is State.PT_MASTER
        and ecr.next_deadline() == 180.1
    )
    ecr.receive(m.intermediate(0x0A).to_apdu(), 1.0)
    assert drain(ecr) == [Intermediate(0x0A, "insert card")] and ecr.apdus_to_send() == [ACK]
    result = m.status_information([Bmp(0x27, b"\x00")])
    ecr.receive(result.to_apdu(), 2.0)
    assert drain(ecr) == [ResultReceived(result)]
    assert (
        ecr.apdus_to_send() == [] and state(ecr) is State.HOLDING_RESULT
    )  # not acked before it is stored
    ecr.confirm_result(2.5)
    assert ecr.apdus_to_send() == [ACK] and state(ecr) is State.PT_MASTER
    ecr.receive(m.print_line(0, "RECEIPT").to_apdu(), 3.0)
    assert drain(ecr) == [Printed(("RECEIPT",))] and ecr.apdus_to_send() == [ACK]
    ecr.receive(m.completion().to_apdu(), 4.0)
    assert drain(ecr) == [Completed(m.completion())] and ecr.apdus_to_send() == [ACK]
    assert state(ecr) is State.IDLE


def test_a_result_repeated_by_the_link_is_acknowledged_not_reported_twice() -> None:
    """Our ACK to the 04 0F was lost after we had answered it with 80 00: the PT's link layer
    repeats the frame, ours delivers it (it cannot tell it from a new message). One sequence
    has one result of a kind: the repeat is answered and dropped, never booked twice."""
    ecr = started()
    ecr.receive(ACK, 0.1)
    result = m.status_information([Bmp(0x27, b"\x00"), m.bmp_amount(2500)])
    ecr.receive(result.to_apdu(), 1.0)
    ecr.confirm_result(1.1)
    assert drain(ecr) == [Accepted(), ResultReceived(result)] and ecr.apdus_to_send() == [ACK]
    ecr.receive(result.to_apdu(), 6.0)
    assert drain(ecr) == [] and ecr.apdus_to_send() == [ACK] and state(ecr) is State.PT_MASTER
    other = m.status_information([Bmp(0x27, b"\x00"), m.bmp_amount(1000)])
    ecr.receive(other.to_apdu(), 7.0)  # a different result is news
    assert drain(ecr) == [ResultReceived(other)]


def test_rejected_command() -> None:
    ecr = started()
    ecr.receive(m.nack(0x9C).to_apdu(), 0.1)
    assert drain(ecr) == [Rejected(0x9C)] and state(ecr) is State.IDLE


def test_t3_without_acknowledgement() -> None:
    ecr = started()
    ecr.on_deadline(4.9)
    assert drain(ecr) == []
    ecr.on_deadline(5.0)
    assert drain(ecr) == [TimedOut("T3")] and state(ecr) is State.IDLE


def test_t4_restarted_by_intermediate_status_with_its_own_timeout() -> None:
    ecr = started()
    ecr.receive(ACK, 0.0)
    ecr.receive(m.intermediate(0x17, timeout_minutes=5).to_apdu(), 100.0)
    assert ecr.next_deadline() == 400.0
    ecr.on_deadline(399.0)
    assert drain(ecr)[-1] == Intermediate(0x17, "please wait")
    ecr.on_deadline(400.0)
    assert drain(ecr) == [TimedOut("T4")]


def test_abort_while_waiting_for_the_card() -> None:
    ecr = started()
    ecr.receive(ACK, 0.0)
    drain(ecr)
    assert ecr.abort(1.0) is True and ecr.apdus_to_send() == [m.abort().to_apdu()]
    assert ecr.abort(1.1) is False  # once
    ecr.receive(ACK, 1.2)  # the PT acknowledges the 06 B0
    ecr.receive(m.abort_pt(0x6C).to_apdu(), 1.3)
    events = drain(ecr)
    assert isinstance(events[-1], Aborted) and events[-1].code == 0x6C
    assert ecr.apdus_to_send() == [ACK]


def test_read_card_ends_with_its_result() -> None:
    ecr = EcrSequence()
    ecr.start(m.read_card(15), 0.0, completes_on_result=True)
    ecr.apdus_to_send()
    ecr.receive(ACK, 0.1)
    ecr.receive(m.status_information([Bmp(0x27, b"\x00")]).to_apdu(), 1.0)
    ecr.confirm_result(1.0)
    assert isinstance(drain(ecr)[-1], Completed) and state(ecr) is State.IDLE


def test_ack_only_commands_complete_on_ack() -> None:
    ecr = EcrSequence()
    ecr.start(m.log_off(), 0.0, completes_on_ack=True)
    ecr.receive(ACK, 0.1)
    assert drain(ecr) == [Accepted(), Completed(None)]


def test_garbage_from_the_pt_is_reported_not_raised() -> None:
    ecr = started()
    ecr.receive(ACK, 0.0)
    ecr.receive(Apdu(0x04, 0x0F, b"\x22\xf9"), 1.0)  # LLVAR length byte F9 then nothing
    events = drain(ecr)
    assert isinstance(events[-1], Malformed)
    assert ecr.apdus_to_send() == [Apdu(0x84, 0x9A)]


def test_one_sequence_at_a_time() -> None:
    ecr = started()
    with pytest.raises(RuntimeError, match="one at a time"):
        ecr.start(m.log_off(), 0.0)
