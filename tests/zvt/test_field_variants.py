"""The driver against the simulator playing what real terminals do differently (the field
traces in tests/data/zvt-real-traces and docs/ZVT-VARIANTS.md), over a real pty and loopback TCP.
"""

from __future__ import annotations

from drivers.base import Outcome
from drivers.money import Money
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
    cap = await t.capture(pre.receipt_no or 0, EUR50, Money(1234, "EUR"), "FT-1")
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
