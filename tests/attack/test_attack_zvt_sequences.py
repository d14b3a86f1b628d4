"""Adversarial review of issue 30 (field truth): the ZVT sequence layer, sans-I/O.

Each test is an attack on a money-relevant claim of the merge. BROKEN ones are
``xfail(strict=True)``: they pass the day the hole is closed.
"""

from __future__ import annotations

from drivers.zvt import messages as m
from drivers.zvt.apdu import Apdu
from drivers.zvt.fields import Bmp, Tlv, encode_tlv
from drivers.zvt.sequences import (
    Accepted,
    Completed,
    EcrSequence,
    Malformed,
    Rejected,
    ResultReceived,
    State,
)

ACK = m.ack().to_apdu()


def drain(ecr: EcrSequence) -> list[object]:
    out: list[object] = []
    while (e := ecr.next_event()) is not None:
        out.append(e)
    return out


def master(command: m.Message | None = None, **kw: bool) -> EcrSequence:
    ecr = EcrSequence(t3=5.0, t4=180.0)
    ecr.start(command or m.pre_authorisation(2500, 978), 0.0, **kw)
    ecr.apdus_to_send()
    ecr.receive(ACK, 0.1)
    assert drain(ecr) == [Accepted()] and ecr.state is State.PT_MASTER
    return ecr


def result(amount: int, receipt: int, seq: int | None, trace: int = 1) -> m.Message:
    bmps = [Bmp(0x27, b"\x00"), m.bmp_amount(amount), m.bmp_receipt(receipt)]
    bmps.append(Bmp(0x0B, bytes.fromhex(f"{trace:06d}")))  # trace number, BCD
    if seq is not None:
        bmps.append(Bmp(0x06, encode_tlv([Tlv(0x1F73, seq.to_bytes(3, "big"))])))
    return m.status_information(bmps)


def feed_result(ecr: EcrSequence, msg: m.Message, now: float) -> list[object]:
    ecr.receive(msg.to_apdu(), now)
    events = drain(ecr)
    if any(isinstance(e, ResultReceived) for e in events):
        ecr.confirm_result(now + 0.01)
    ecr.apdus_to_send()
    return events


def test_same_1f73_but_different_money_is_not_silently_dropped() -> None:
    """A PT (bug, firmware reset of its counter, or a replayed frame) sends a second result with
    the first one's sequence number but a different amount and receipt. Whatever it is, it is
    not "the same result again": the driver must surface it (a new result or a protocol error),
    never acknowledge and forget money it has not booked."""
    ecr = master()
    assert any(isinstance(e, ResultReceived) for e in feed_result(ecr, result(2500, 7, 5), 1.0))
    second = feed_result(ecr, result(4000, 8, 5, trace=2), 2.0)
    assert any(isinstance(e, ResultReceived | Malformed) for e in second), second


def test_a_different_1f73_with_the_same_receipt_is_a_new_result_event() -> None:
    """Claim: "a new number = a new result, even if every other byte is the same". The sequence
    layer reports it again; the engine's persist key (cmd.key:attempt:held) is the same for both
    and the final answer is the last result, so it is not booked twice. Documents the behaviour."""
    ecr = master()
    first = feed_result(ecr, result(2500, 7, 5), 1.0)
    second = feed_result(ecr, result(2500, 7, 6), 2.0)
    assert sum(isinstance(e, ResultReceived) for e in first + second) == 2


def test_1f73_on_only_one_of_two_identical_results_is_not_taken_for_a_repeat_of_new_money() -> None:
    """Number present on the first, absent on the second: falls back to byte equality, which
    differs (the TLV) -> a new result is reported, never dropped."""
    ecr = master()
    feed_result(ecr, result(2500, 7, 5), 1.0)
    second = feed_result(ecr, result(2500, 7, None), 2.0)
    assert any(isinstance(e, ResultReceived) for e in second)


def test_1f73_wrapping_to_zero_is_a_new_result() -> None:
    ecr = master()
    feed_result(ecr, result(2500, 7, 0xFFFFFF), 1.0)
    second = feed_result(ecr, result(100, 9, 0, trace=2), 2.0)
    assert any(isinstance(e, ResultReceived) for e in second)


def test_a_true_repeat_with_the_same_number_is_acked_not_rebooked() -> None:
    ecr = master()
    feed_result(ecr, result(2500, 7, 5), 1.0)
    ecr.receive(result(2500, 7, 5).to_apdu(), 2.0)
    assert drain(ecr) == [] and ecr.apdus_to_send() == [ACK]


# ---- 84 xx ------------------------------------------------------------------------------------


def test_84_00_00_to_a_payment_waits_for_the_result_like_80_00() -> None:
    ecr = EcrSequence()
    ecr.start(m.pre_authorisation(2500, 978), 0.0)
    ecr.apdus_to_send()
    ecr.receive(m.nack(0x00).to_apdu(), 0.1)
    assert drain(ecr) == [Accepted()] and ecr.state is State.PT_MASTER  # no money decided yet
    ecr.on_deadline(200.0)  # no result: the engine sees a timeout -> UNKNOWN, never approved
    assert ecr.next_deadline() is None and any(type(e).__name__ == "TimedOut" for e in drain(ecr))


def test_84_00_with_an_error_byte_is_not_acceptance() -> None:
    """By the driver's own reading of ``84 1E 01 7D`` (one data byte = the result code), a
    ``84 00 01 7D`` says "refused, 7D". The driver only looks at INSTR 00 and accepts: an abort
    (completes_on_ack) reports success although the PT refused it."""
    ecr = EcrSequence()
    ecr.start(m.abort(), 0.0, completes_on_ack=True)
    ecr.apdus_to_send()
    ecr.receive(Apdu(0x84, 0x00, b"\x7d"), 0.1)  # 84 00 01 7D
    events = drain(ecr)
    assert not any(isinstance(e, Accepted) for e in events), events


def test_84_1e_01_7d_to_a_payment_is_a_refusal_with_7d() -> None:
    ecr = EcrSequence()
    ecr.start(m.pre_authorisation(2500, 978), 0.0)
    ecr.apdus_to_send()
    ecr.receive(m.decode(bytes.fromhex("841e017d")).to_apdu(), 0.1)
    assert drain(ecr) == [Rejected(0x7D)] and ecr.state is State.IDLE


def test_a_refused_abort_mid_payment_leaves_the_payments_result_in_charge() -> None:
    """06 B0 sent while the PT is master, answered 84 1E 01 7D (abort refused): the payment is
    still running, and its 04 0F must still be reported (and booked), not lost."""
    ecr = master()
    assert ecr.abort(1.0)
    ecr.apdus_to_send()
    ecr.receive(m.decode(bytes.fromhex("841e017d")).to_apdu(), 1.1)
    assert drain(ecr) == [] and ecr.state is State.PT_MASTER
    events = feed_result(ecr, result(2500, 7, None), 2.0)
    assert any(isinstance(e, ResultReceived) for e in events)
    ecr.receive(m.completion().to_apdu(), 3.0)
    assert any(isinstance(e, Completed) for e in drain(ecr))
