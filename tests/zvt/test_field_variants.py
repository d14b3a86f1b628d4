"""The driver against the simulator playing what real terminals do differently (the field
traces in tests/data/zvt-real-traces and docs/ZVT-VARIANTS.md), over a real pty and loopback TCP.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from drivers.base import Outcome
from drivers.money import Money
from drivers.zvt import messages as m
from drivers.zvt.fields import Bmp, Tlv, encode_tlv
from drivers.zvt.sequences import is_repeat
from tests.zvt.conftest import Rig

EUR50 = Money(5000, "EUR")
TITLE = "** HÄNDLERBELEG **"


async def test_a_status_byte_alone_is_the_terminal_status(rig: Rig) -> None:
    """A VALINA answers 05 01 with ``06 0F 01 DC`` (no software version): card inserted. A
    status check must say so, not "ready"."""
    rig.sim.config.variants.status_version = False
    rig.sim.config.variants.terminal_status = 0xDC
    t = rig.make_driver()
    assert (await t.connect()).approved
    status = await t.status()
    assert status.outcome is Outcome.ERROR and "card inserted" in status.message
    assert status.details["terminal_status"] == "DC"
    rig.sim.config.variants.terminal_status = 0x00
    assert (await t.status()).approved


async def _capture_receipt(
    rig: Rig, *, print_lines: bool = False, **driver_options: object
) -> tuple[str, ...]:
    t = rig.make_driver(**driver_options)
    assert (await t.connect()).approved
    if print_lines:  # a terminal without text blocks (06 D3) prints line by line (06 D1)
        rig.sim.state.text_blocks = False
    pre = await t.preauthorize(EUR50, "FT-1")
    cap = await t.capture(pre.ref or "", EUR50, Money(1234, "EUR"), "FT-1")
    assert cap.approved
    return cap.receipt_lines


async def test_cardcomplete_print_lines_in_latin1_with_a_tlv_after_the_text(rig: Rig) -> None:
    """CardComplete: 06 D1 lines in ISO-8859-1, each followed by TLV 1F07, ending with an empty
    line of attribute 81. With the terminal's charset set, the receipt reads as printed."""
    variants = rig.sim.config.variants
    variants.charset, variants.print_line_tlv, variants.receipt_title = "iso-8859-1", True, TITLE
    lines = await _capture_receipt(rig, print_lines=True, charset="iso-8859-1")
    assert lines[0] == TITLE and "Amount 12.34 EUR" in lines
    assert lines[-1] == ""  # the empty last line, not the TLV's bytes
    assert not any(c in line for line in lines for c in "\x06\x1f\ufffd")


async def test_the_zvt_default_set_misreads_latin1_which_is_why_it_is_a_setting(rig: Rig) -> None:
    variants = rig.sim.config.variants
    variants.charset, variants.receipt_title = "iso-8859-1", TITLE
    lines = await _capture_receipt(rig)  # text blocks, nothing announced, the ZVT default
    assert lines[0] == "** H─NDLERBELEG **"


async def test_a_text_block_that_announces_its_set_is_read_in_it(rig: Rig) -> None:
    """TLV 14 in the block names the set; it wins over the terminal's setting."""
    variants = rig.sim.config.variants
    variants.charset, variants.announce_charset, variants.receipt_title = (
        "iso-8859-2",
        True,
        TITLE,
    )
    lines = await _capture_receipt(rig)  # configured cp437
    assert lines[0] == TITLE


async def test_ccv_refusal_84_1e_with_a_result_byte(rig: Rig) -> None:
    """A CCV IM30 refuses with ``84 1E 01 7D``: not accepted, result 7D (communication error);
    a refused money command is an error, never an unknown outcome."""
    t = rig.make_driver()
    assert (await t.connect()).approved
    rig.sim.config.variants.refusals.append(bytes.fromhex("841e017d"))
    pre = await t.preauthorize(EUR50, "FT-2")
    assert pre.outcome is Outcome.ERROR and pre.result_code == 0x7D
    assert pre.message == "communication error"
    assert rig.sim.state.transactions == {}
    assert (await t.preauthorize(EUR50, "FT-3")).approved  # and the line goes on


# ---- variants read in the spec and other implementations (docs/ZVT-VARIANTS.md) ----------------


async def test_84_00_00_is_taken_as_the_positive_acknowledgement(rig: Rig) -> None:
    rig.sim.config.variants.positive_ack = "8400"
    t = rig.make_driver()
    assert (await t.connect()).approved
    assert (await t.preauthorize(EUR50, "FT-4")).approved


async def test_a_terminal_that_ignores_a_command_while_master(rig: Rig) -> None:
    """An ECR that restarted mid-payment registers while the PT waits for the card, and this
    PT does not answer at all: each registration ends as an error (T3), never "busy" or
    "approved", and the PT reverses the payment nobody acknowledged. On a serial line the PT's
    link takes a byte-identical frame, with nothing sent by the PT since it acknowledged the
    first, for a retransmission and drops it: repeated as it was, the registration would never
    get through again. The driver puts a status enquiry in between (never an abort: that would
    end the PT's old sequence and its 06 1E would answer our next command), and the first
    registration after the PT is free is answered."""
    if rig.kind == "tcp":
        pytest.skip("a closed TCP connection ends the PT's sequence at once")
    rig.sim.config.variants.command_while_master = "ignore"
    t = rig.make_driver()
    await t.connect()
    rig.sim.config.card_wait_s, rig.sim.config.result_ack_timeout_s = 0.6, 3.0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await t.preauthorize(EUR50, "FT-5")
    await t.close()
    again = rig.make_driver()  # T3 2 s: the PT is master until about 3.8 s from here
    # Opening the line, the driver refuses (NAK) what the PT still sends of the dead payment
    # and waits for silence (docs/ZVT-VARIANTS.md, 8): the PT gives that result up and
    # reverses it. A registration the PT ignored meanwhile is an error, never busy/approved.
    outcomes = [(await again.connect()).outcome for _ in range(3)]
    approved = outcomes.index(Outcome.APPROVED)
    assert set(outcomes[:approved]) <= {Outcome.ERROR}, outcomes
    assert [x.state for x in rig.sim.state.transactions.values()] in ([], ["reversed"])
    assert "06B0" not in rig.sim.state.commands
    assert (await again.status()).approved and (await again.connect()).approved


async def test_a_status_enquiry_the_terminal_ignored_gets_through_once_it_is_free(
    rig: Rig,
) -> None:
    """The same deadlock with the status enquiry, which a health probe repeats: the driver gave
    up on a payment (T4) that the PT still runs and ignores commands in. Before the repeated
    enquiry goes the registration, and the enquiry after it is answered."""
    if rig.kind == "tcp":
        pytest.skip("a closed TCP connection ends the PT's sequence at once")
    rig.sim.config.variants.command_while_master = "ignore"
    t = rig.make_driver()  # T3 2 s, T4 3 s
    await t.connect()
    rig.sim.config.card_wait_s, rig.sim.config.result_ack_timeout_s = 3.5, 3.0
    assert (await t.preauthorize(EUR50, "FT-5b")).outcome is Outcome.UNKNOWN  # T4
    assert t.client.connected
    assert [(await t.status()).outcome for _ in range(2)] == [Outcome.ERROR] * 2
    assert (await t.status()).approved
    assert rig.sim.state.commands[-2:] == ["0600", "0501"]
    assert [x.state for x in rig.sim.state.transactions.values()] == ["reversed"]


def test_the_pts_sequence_number_decides_what_is_a_repeat() -> None:
    """TLV 1F73: same number = the same result sent again (even if its time changed); a new
    number = a new result (even if every other byte is the same)."""
    base = [Bmp(0x27, b"\x00"), m.bmp_amount(100), m.bmp_receipt(7)]

    def numbered(n: int, time: bytes = b"\x12\x00\x00") -> m.Message:
        tlv = Bmp(0x06, encode_tlv([Tlv(0x1F73, n.to_bytes(3, "big"))]))
        return m.status_information([*base, Bmp(0x0C, time), tlv])

    assert is_repeat(numbered(5), numbered(5, b"\x12\x00\x01"))
    assert not is_repeat(numbered(5), numbered(6))
    assert is_repeat(m.status_information(base), m.status_information(base))


async def test_a_numbered_result_repeated_after_our_answer_is_booked_once(rig: Rig) -> None:
    if rig.kind == "tcp":
        pytest.skip("TCP has no link-level ACK to lose")
    rig.sim.config.variants.sequence_numbers = True
    rig.sim.config.result_ack_lost, rig.sim.config.link_t2_s = 1, 0.5
    t = rig.make_driver()
    await t.connect()
    stored: list[object] = []

    async def persist(result: object) -> None:
        stored.append(result)

    pre = await t.preauthorize(EUR50, "FT-6", persist)
    assert (
        pre.approved and len(stored) == 1 and list(map(str, rig.sim.open_preauths())) == [pre.ref]
    )
    assert rig.sim.state.sequence_no == 1  # numbered once; the repeat kept its number


@pytest.mark.parametrize(
    ("terminal", "setting", "added"),
    [
        ("increment", "increment", 1500),
        ("total", "total", 1500),
        ("total", "increment", None),  # 30.00 for a 15.00 top-up: not an increment, unknown
        ("increment", "total", None),  # 15.00 as a total of a 15.00 hold adds nothing: unknown
    ],
)
async def test_a_top_up_answer_read_as_the_terminal_reports_it(
    rig: Rig, terminal: Literal["increment", "total"], setting: str, added: int | None
) -> None:
    rig.sim.config.extensions = "same_receipt"
    rig.sim.config.variants.topup_amount = terminal
    t = rig.make_driver(incremental=True, topup_amount=setting)
    await t.connect()
    pre = await t.preauthorize(Money(1500, "EUR"), "FT-7")
    more = await t.add_hold(pre.ref or "", pre.trace_no, Money(1500, "EUR"), "FT-7")
    if added is None:
        assert more.outcome is Outcome.UNKNOWN and more.amount is None
    else:
        assert more.approved and more.amount == Money(added, "EUR")
    assert rig.sim.state.transactions[int(pre.ref or "")].amount == 3000  # the PT holds 30.00


@pytest.mark.parametrize("reask", [False, True])
async def test_card_first_with_and_without_the_card_asked_again(rig: Rig, reask: bool) -> None:
    """Read card (06 C0), then the pre-authorisation: some PTs use the card just read, others
    ask for it again (04 FF 0A) and wait; the driver acknowledges the prompt, restarts T4 and
    gets the approval either way."""
    rig.sim.config.variants.reask_card = reask
    rig.sim.config.card_wait_s = 1.0  # the customer presents the card again: longer than T3
    t = rig.make_driver()
    await t.connect()
    assert (await t.read_card(5)).approved
    pre = await t.preauthorize(EUR50, "FT-8")
    assert pre.approved and rig.sim.state.unanswered == 0
