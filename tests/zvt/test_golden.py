"""Golden bytes, both directions, from real captures and public test vectors.

Sources (each vector names its own):
- FEIG: Feig cVEND plug captures published in EVerest/zvt's test data (zvt/data/*.blob); the
  same bytes and decoded values are asserted by EVerest/zvt's tests in zvt/src/packets.rs
  (test_registration, test_pre_auth_data, test_partial_reversal, test_pre_auth_reversal,
  test_end_of_day, test_completion_data, test_partial_reversal_abort, status information).
- ECRTERM: test vectors of wirelane/ecrterm (Python).
- PORTALUM: the serial log in Portalum/Portalum.Zvt issue #56 (PAYONE P400 Plus).
- DCE: a card-complete/DCE support memo on registration for vending (via the ZVT notes).
- WORLDLINE: a card-complete decline capture (via the ZVT notes).
"""

from __future__ import annotations

import pytest

from drivers.zvt import messages as m
from drivers.zvt.apdu import Apdu
from drivers.zvt.constants import RECEIPT_NONE, Command
from drivers.zvt.fields import Tlv, decode_tlv
from drivers.zvt.serial_framing import FrameDecoder, FrameReceived, crc16, frame


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# (name, builder result, exact APDU bytes, source)
ECR_COMMANDS = [
    (
        "registration pw 123456 cfg DE EUR",
        m.registration("123456", 0xDE, 978),
        "06 00 06 12 34 56 DE 09 78",
        "FEIG",
    ),
    (
        "registration text blocks",
        m.registration("123456", 0xBE, 978, tlv=[Tlv(0x26, children=(Tlv(0x0A, h("06D3")),))]),
        "06 00 0E 12 34 56 BE 09 78 06 06 26 04 0A 02 06 D3",
        "DCE",
    ),
    (
        "pre-auth 25.00 EUR ref AC/384HH2",
        m.pre_authorisation(2500, 978, tlv=[m.reference_tlv("AC", "384HH2")]),
        "06 22 1E 19 40 49 09 78 04 00 00 00 00 25 00 06 10 E9 0E 1F 62 02 41 43 1F 63 06 33 38 34 48 48 32",
        "FEIG",
    ),
    (
        "partial reversal rcpt 0491 release 12.95",
        m.partial_reversal(491, 1295, 978, tlv=[m.reference_tlv("AC", "MF2246")]),
        "06 23 21 19 40 87 04 91 49 09 78 04 00 00 00 00 12 95 06 10 E9 0E 1F 62 02 41 43 1F 63 06 4D 46 32 32 34 36",
        "FEIG",
    ),
    (
        "pre-auth reversal rcpt 0231",
        m.pre_auth_reversal(231, 978),
        "06 25 08 19 40 87 02 31 49 09 78",
        "FEIG",
    ),
    ("enquire open pre-auths", m.enquire_open_preauths(), "06 23 03 87 FF FF", "FEIG"),
    ("end of day pw 123456", m.end_of_day("123456"), "06 50 03 12 34 56", "FEIG"),
    ("status enquiry pw 123456", m.status_enquiry("123456"), "05 01 03 12 34 56", "ZVT notes"),
    ("log-off", m.log_off(), "06 02 00", "ZVT notes"),
    ("abort", m.abort(), "06 B0 00", "ZVT notes"),
    (
        "authorization 1.90 EUR",
        m.Message(Command.AUTHORIZATION, b"", (m.bmp_amount(190),)),
        "06 01 07 04 00 00 00 00 01 90",
        "PORTALUM",
    ),
    (
        "book total rcpt 0231 9.58",
        m.book_total(231, 958, 978),
        "06 24 0F 87 02 31 04 00 00 00 00 09 58 49 09 78 19 40",
        "spec 06 24 layout",
    ),
    (
        "reversal rcpt 0012",
        m.reversal("123456", 12),
        "06 30 06 12 34 56 87 00 12",
        "spec 06 30 layout",
    ),
    (
        "read card 15 s chip silent UID+hash (Feig)",
        m.read_card(
            15,
            card_type=0x10,
            dialog_control=0x02,
            tlv=[Tlv(0x1F15, b"\xd0"), Tlv(0x1F60, b"\x07")],
        ),
        "06 C0 0F 0F 19 10 FC 02 06 08 1F 15 01 D0 1F 60 01 07",
        "FEIG (Qwello)",
    ),
    (
        "repeat last result",
        m.repeat_receipt("123456"),
        "06 20 05 12 34 56 03 01",
        "spec 06 20 layout",
    ),
    ("diagnosis extended", m.diagnosis(2), "06 70 05 06 03 1B 01 02", "spec 06 70 layout"),
    (
        "display two lines 5 s",
        m.display_text(["Karte", "bitte"], 5),
        "06 E0 12 F0 05 F1 F0 F5 4B 61 72 74 65 F2 F0 F5 62 69 74 74 65",
        "spec 06 E0 layout",
    ),
]


@pytest.mark.parametrize(
    ("name", "message", "wire", "source"), ECR_COMMANDS, ids=[c[0] for c in ECR_COMMANDS]
)
def test_ecr_commands_encode_and_decode_exactly(
    name: str, message: m.Message, wire: str, source: str
) -> None:
    raw = h(wire)
    assert message.to_apdu().encode() == raw, f"{name} ({source})"
    assert m.decode(raw) == message


def test_feig_approval_decodes_like_everest() -> None:
    """FEIG 1680728165.675509000_pt_ecr: approval of the 25.00 EUR pre-auth."""
    raw = (
        h(
            "04 0F 5A 27 00 04 00 00 00 00 25 00 49 09 78 0C 22 55 58 0D 04 05 22 F0 F8 55 98 83 EE EE EE 80 74"
            " 87 02 31 3B"
        )
        + b"750071\x00\x00"
        + h("0B 00 09 75 19 60 29 52 52 35 35 0E 24 05 8A 06 8C 01 8B F1 F1")
        + b"MasterCard\x00"
        + b"\x2a"
        + b"804011926      "
    )
    msg = m.decode(raw)
    assert msg.command == Command.STATUS_INFORMATION
    assert (msg.result_code, msg.amount, msg.currency) == (0, 2500, 978)
    assert (msg.receipt_number, msg.trace_number, msg.terminal_id) == (231, 975, "52523535")
    assert (msg.aid, msg.card_name, msg.card_type, msg.payment_type) == (
        "750071",
        "MasterCard",
        6,
        0x60,
    )
    assert str(msg.tx_time) == "22:55:58" and msg.tx_date == (4, 5)
    assert msg.vu_number == "804011926"
    assert msg.masked_pan == "559883******8074"
    assert "5598" not in repr(msg)  # the PAN field is masked in reprs and logs
    assert msg.to_apdu().encode() == raw


def test_feig_registration_completion() -> None:
    """FEIG 1680761818.641601000_pt_ecr: status byte 10 (vending), TID 52523535, EUR."""
    msg = m.decode(h("06 0F 0A 19 10 29 52 52 35 35 49 09 78"))
    assert (msg.status_byte, msg.terminal_id, msg.currency) == (0x10, "52523535", 978)


def test_feig_no_open_preauth_reply() -> None:
    """FEIG partial_reversal.blob: 06 1E B8 with receipt FFFF = nothing open."""
    msg = m.decode(h("06 1E 04 B8 87 FF FF"))
    assert (
        msg.result_code == 0xB8 and msg.receipt_number == RECEIPT_NONE and msg.open_preauths == []
    )
    assert m.abort_pt(0xB8, [m.bmp_receipt(RECEIPT_NONE)]).to_apdu().encode() == h(
        "06 1E 04 B8 87 FF FF"
    )


def test_ecrterm_open_preauth_lists() -> None:
    """ECRTERM: one open (0123); two open in TLV 23 (layout after ecrterm's list vector)."""
    assert m.decode(h("06 1E 04 B8 87 01 23")).open_preauths == [123]
    two = m.decode(h("06 1E 10 B8 87 01 23 06 0A 23 08 08 02 01 23 08 02 45 67"))
    assert two.open_preauths == [123, 4567]


def test_everest_read_card_status_information_roundtrips() -> None:
    """FEIG bytes asserted in EVerest/zvt packets.rs: a card read with four applications."""
    raw = bytes(
        [
            4,
            15,
            100,
            39,
            0,
            6,
            96,
            76,
            10,
            0,
            0,
            0,
            0,
            0,
            0,
            8,
            255,
            105,
            20,
            31,
            69,
            12,
            12,
            120,
            128,
            116,
            3,
            128,
            49,
            192,
            115,
            214,
            49,
            192,
            31,
            76,
            1,
            1,
            31,
            77,
            2,
            254,
            4,
            31,
            79,
            2,
            4,
            0,
            31,
            80,
            1,
            32,
            96,
            11,
            67,
            9,
            160,
            0,
            0,
            0,
            89,
            69,
            67,
            1,
            0,
            96,
            12,
            67,
            10,
            160,
            0,
            0,
            3,
            89,
            16,
            16,
            2,
            128,
            1,
            96,
            11,
            67,
            9,
            210,
            118,
            0,
            0,
            37,
            71,
            65,
            1,
            0,
            96,
            9,
            67,
            7,
            160,
            0,
            0,
            0,
            4,
            16,
            16,
        ]
    )
    msg = m.decode(raw)
    assert msg.result_code == 0
    apps = [t for t in msg.tlv if t.tag == 0x60]
    assert len(apps) == 4
    uid = next(t for t in msg.tlv if t.tag == 0x4C)
    assert uid.value.hex() == "000000000000" + "08ff6914"
    assert msg.to_apdu().encode() == raw


def test_ecrterm_completion_with_software_version_frame() -> None:
    """ECRTERM: serial frame of a completion carrying SW version "2.14.15", status 00."""
    wire = h("10 02 06 0F 0B F0 F0 F7 32 2E 31 34 2E 31 35 00 10 03 B1 11")
    events = FrameDecoder().feed(wire)
    assert isinstance(events[0], FrameReceived)
    msg = m.decode(events[0].apdu)
    assert msg.software_version == "2.14.15" and msg.terminal_status == 0
    assert frame(m.status_completion("2.14.15", 0).to_apdu().encode()) == wire


def test_ecrterm_intermediate_status_with_display_text() -> None:
    raw = h("04 FF 1E 0A 01 06 1A 24 18 07 16") + b"Bitte Karte einstecken"
    msg = m.decode(raw)
    assert msg.intermediate_status == 0x0A and msg.text_lines == ["Bitte Karte einstecken"]
    assert msg.to_apdu().encode() == raw


def test_ecrterm_print_line_and_abort_with_manufacturer_text() -> None:
    line = m.decode(h("06 D1 17 00") + b"         Kassenschnitt")
    assert line.print_line == (0, "         Kassenschnitt")
    raw = (
        h("06 1E 2E 6C 06 2B 1F 16 05 FF 00 00 14 41 1F 17 20")
        + b"Abbruch durch externes Kommando!"
    )
    abort = m.decode(raw)
    assert abort.result_code == 0x6C
    text = next(t for t in abort.tlv if t.tag == 0x1F17)
    assert text.value == b"Abbruch durch externes Kommando!"
    assert abort.to_apdu().encode() == raw


def test_worldline_decline() -> None:
    raw = (
        h("04 0F 31 27 05 29 29 00 10 06 3C F0 F1 F5")
        + b"Karte abgelehnt"
        + h("8A 0D 06 13 24 11 07 0F")
        + b"Karte abgelehnt"
    )
    msg = m.decode(raw)
    assert (msg.result_code, msg.terminal_id, msg.additional_text, msg.card_type) == (
        5,
        "29001006",
        "Karte abgelehnt",
        0x0D,
    )
    assert msg.card_name == "V PAY"
    assert msg.text_lines == ["Karte abgelehnt"]


def test_ecrterm_full_featured_registration_decodes() -> None:
    raw = h(
        "06 00 63 00 00 00 FE 09 78 03 00 06 59 10 02 16 02 12 01 40 1A 02 10 00 26 28 0A 02 04 0F 0A 02 06 0F"
        " 0A 02 06 1E 0A 02 04 FF 0A 02 06 D8 0A 02 06 DB 0A 02 06 D9 0A 02 06 DA 0A 02 06 DD 0A 02 06 D3 27 03"
        " 14 01 FF 28 10 15 02 44 45 15 02 45 4E 15 02 46 52 15 02 49 54 40 02 C0 00 1F 04 02 F1 00 1F 05 01 00"
    )
    msg = m.decode(raw)
    assert (msg.password, msg.config_byte, msg.registration_currency) == ("000000", 0xFE, 978)
    permitted = next(t for t in msg.tlv if t.tag == 0x26)
    assert len(permitted.children) == 10 and permitted.children[-1].value == h("06 D3")
    assert msg.to_apdu().encode() == raw


# Serial frames: (APDU, frame, source). The first two are captured, the rest computed by the notes.
FRAMES = [
    (
        "06 01 07 04 00 00 00 00 01 90",
        "10 02 06 01 07 04 00 00 00 00 01 90 10 03 76 57",
        "PORTALUM",
    ),
    (
        "06 0F 0B F0 F0 F7 32 2E 31 34 2E 31 35 00",
        "10 02 06 0F 0B F0 F0 F7 32 2E 31 34 2E 31 35 00 10 03 B1 11",
        "ECRTERM",
    ),
    ("80 00 00", "10 02 80 00 00 10 03 F5 1F", "notes"),
    ("06 0F 00", "10 02 06 0F 00 10 03 C6 33", "notes"),
    ("06 00 06 12 34 56 DE 09 78", "10 02 06 00 06 12 34 56 DE 09 78 10 03 2C 28", "notes"),
    (
        "06 25 08 19 40 87 02 31 49 09 78",
        "10 02 06 25 08 19 40 87 02 31 49 09 78 10 03 6B C6",
        "notes",
    ),
    ("06 23 03 87 FF FF", "10 02 06 23 03 87 FF FF 10 03 FB BD", "notes"),
    ("06 1E 04 B8 87 FF FF", "10 02 06 1E 04 B8 87 FF FF 10 03 B6 4B", "notes"),
    ("06 50 03 12 34 56", "10 02 06 50 03 12 34 56 10 03 C4 AF", "notes"),
    ("05 01 03 12 34 56", "10 02 05 01 03 12 34 56 10 03 E0 43", "notes"),
    (
        "06 01 07 04 00 00 00 00 10 00",
        "10 02 06 01 07 04 00 00 00 00 10 10 00 10 03 62 91",
        "notes: DLE stuffed",
    ),
    ("06 02 00", "10 02 06 02 00 10 03 B9 CC", "notes"),
    ("06 B0 00", "10 02 06 B0 00 10 03 43 F3", "notes"),
    (
        "06 0F 0A 19 10 29 52 52 35 35 49 09 78",
        "10 02 06 0F 0A 19 10 10 29 52 52 35 35 49 09 78 10 03 26 92",
        "notes",
    ),
]


@pytest.mark.parametrize(("apdu", "wire", "source"), FRAMES)
def test_serial_frames(apdu: str, wire: str, source: str) -> None:
    assert frame(h(apdu)) == h(wire), source
    assert FrameDecoder().feed(h(wire)) == [FrameReceived(h(apdu))]


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x2189  # CRC-16/KERMIT


def test_extended_length_is_little_endian() -> None:
    """FEIG 06 D3 receipt: FF 61 04 = 0x0461 data bytes."""
    data = bytes(0x461)
    raw = h("06 D3 FF 61 04") + data
    apdu = Apdu.decode(raw)
    assert len(apdu.data) == 0x461 and apdu.encode() == raw


def test_feig_ff_tags_as_leaves() -> None:
    value = h("E4 10 FF 40 03 12 34 56 FF 41 07 D5 B7 13 69 76 C1 01")
    (container,) = decode_tlv(value, feig_ff_primitive=True)
    assert [c.tag for c in container.children] == [0xFF40, 0xFF41]
    assert container.children[1].value == h("D5 B7 13 69 76 C1 01")
    # Without the switch the FF tags' content is not TLV: it is kept as bytes, never dropped.
    (kept,) = decode_tlv(value)
    assert [c.value for c in kept.children] == [h("12 34 56"), h("D5 B7 13 69 76 C1 01")]
