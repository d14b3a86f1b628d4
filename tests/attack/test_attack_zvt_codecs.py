"""Adversarial review of issue 30: codecs (print lines with a TLV, character sets), pure units."""

from __future__ import annotations

import pytest

from drivers.zvt import messages as m
from drivers.zvt.charset import announced
from drivers.zvt.constants import Command
from drivers.zvt.fields import Bmp, Tlv, encode_tlv


@pytest.mark.parametrize(
    "text",
    ["Summe 12,34 EUR", "", "HÄNDLERBELEG", "A" * 200, "x\x1f\x07y"],
)
@pytest.mark.parametrize("charset", ["cp437", "iso-8859-1"])
def test_a_print_line_with_a_receipt_type_tlv_keeps_its_text_and_round_trips(
    text: str, charset: str
) -> None:
    raw = m.print_line(0x00, text, [Tlv(0x1F07, b"\x01")], charset).to_apdu().encode()
    decoded = m.decode(raw, charset)
    assert decoded.print_line == (0x00, text)
    assert decoded.to_apdu().encode() == raw


def test_a_tlv_with_a_text_line_after_a_print_line_is_not_printed_but_round_trips() -> None:
    """A 06 D1 whose container carries a 07 text ("the next line"): not printed (06 D1 prints
    its positional text only), and the bytes re-encode exactly. Text holding the control byte
    06 can be cut where a valid container would start -- only for text with control bytes,
    never for a printable receipt. HOLDS (cosmetic at worst)."""
    raw = m.print_line(0, "Summe", [Tlv(0x1F07, b"\x01"), Tlv(0x07, b"NEXT")]).to_apdu().encode()
    decoded = m.decode(raw)
    assert decoded.print_line == (0, "Summe") and decoded.to_apdu().encode() == raw


@pytest.mark.parametrize("code", [0x0C, 0x11, 0x80, 0xFD])
def test_an_undefined_announcement_falls_back_to_the_configured_set(code: int) -> None:
    assert announced(code) is None
    block = m.print_text_block(["HÄNDLER"], charset="iso-8859-1")
    tlv = [*block.tlv, Tlv(0x14, bytes([code]))]
    msg = m.Message(Command.PRINT_TEXT_BLOCK, b"", (Bmp(0x06, encode_tlv(tlv)),), "iso-8859-1")
    again = m.decode(msg.to_apdu().encode(), "iso-8859-1")
    assert again.text_lines == ["HÄNDLER"]


@pytest.mark.parametrize("code", [0x00, 0x01, 0x0F, 0x10, 0xFE, 0xFF])
def test_an_announced_set_never_changes_amount_receipt_or_trace(code: int) -> None:
    """Money fields are BCD, never text: an announcement (TLV 14) in a 04 0F changes nothing."""
    bmps = [
        Bmp(0x27, b"\x00"),
        m.bmp_amount(123456),
        m.bmp_receipt(42),
        Bmp(0x0B, bytes.fromhex("000077")),
        Bmp(0x06, encode_tlv([Tlv(0x14, bytes([code]))])),
    ]
    raw = m.status_information(bmps).to_apdu().encode()
    for configured in ("cp437", "utf-8", "iso-8859-1"):
        msg = m.decode(raw, configured)
        assert (msg.amount, msg.receipt_number, msg.result_code) == (123456, 42, 0)
