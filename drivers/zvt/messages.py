"""ZVT messages: builders for every command the charging flow needs, and typed views.

A ``Message`` is a command code, the positional fields some commands carry before their
BMPs (password, config byte, result code …) and the BMPs in wire order. ``decode`` and
``encode`` are exact inverses; unknown BMPs and TLV tags are kept. The typed properties
read BMPs on demand. Card data never leaves this module unmasked: ``masked_pan`` gives
first 6 and last 4, track data has no accessor, and ``repr`` hides BMPs 22/23/24/2D.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, time

from drivers.zvt.apdu import Apdu
from drivers.zvt.charset import (
    ANNOUNCEMENT_TAG,
    DEFAULT_CHARSET,
    announced,
    announcement_code,
    decode_text,
    encode_text,
)
from drivers.zvt.constants import RECEIPT_NONE, Command
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import (
    Bmp,
    Tlv,
    bcd_decode,
    bcd_digits,
    bcd_encode,
    decode_bmps,
    decode_tlv,
    encode_bmps,
    encode_tlv,
    find_tlv,
    llvar_prefix,
    read_llvar,
)
from drivers.zvt.positional import (
    PASSWORD_COMMANDS,
    nack_result,
    prefix_size,
    print_line_size,
)

__all__ = ["DEFAULT_CHARSET", "Message", "decode"]

_SENSITIVE = frozenset({0x22, 0x23, 0x24, 0x2D})
CARD_TYPES = {
    0x05: "girocard",
    0x06: "Mastercard",
    0x08: "American Express",
    0x0A: "Visa",
    0x0D: "V PAY",
    0x2E: "Maestro",
}


# BMP 60's card groups, in order (ZVT: girocard, JCB, Eurocard/Mastercard, Amex, Visa, Diners,
# others).
TOTALS_GROUPS = ("girocard", "jcb", "mastercard", "amex", "visa", "diners", "other")


@dataclass(frozen=True, slots=True)
class Totals:
    first_receipt: int
    last_receipt: int
    groups: tuple[tuple[str, int, int], ...]  # (card group, count, amount in minor units)


@dataclass(frozen=True, slots=True)
class Message:
    command: int
    prefix: bytes = b""
    bmps: tuple[Bmp, ...] = ()
    # The terminal's configured character set (charset.py); not part of the message's identity.
    charset: str = field(default=DEFAULT_CHARSET, compare=False)

    # ---- wire -------------------------------------------------------------------------

    def to_apdu(self) -> Apdu:
        return Apdu(self.command >> 8, self.command & 0xFF, self.prefix + encode_bmps(self.bmps))

    @classmethod
    def from_apdu(cls, apdu: Apdu, charset: str = DEFAULT_CHARSET) -> Message:
        command, data = apdu.command, apdu.data
        where = _label(command)
        if command == Command.PRINT_LINE:
            size = print_line_size(data)
            return cls(command, data[:size], decode_bmps(data, size, where), charset)
        if apdu.cls in (0x80, 0x84):
            return cls(command, data, (), charset)  # all positional
        size = prefix_size(command, data, where)
        return cls(command, data[:size], decode_bmps(data, size, where), charset)

    def text_of(self, raw: bytes) -> str:
        """Text from this terminal, in ``text_charset``. Trailing NULs (fixed-width fields)
        are padding."""
        return decode_text(raw.rstrip(b"\x00"), self.text_charset)

    @property
    def text_charset(self) -> str:
        """The set the message announces (TLV 14), else the terminal's configured set."""
        announcement = find_tlv(self.tlv, ANNOUNCEMENT_TAG) if self.get(0x06) else None
        if announcement is not None and len(announcement.value) == 1:
            return announced(announcement.value[0]) or self.charset
        return self.charset

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{b.number:02X}=<{len(b.value)} bytes masked>"
            if b.number in _SENSITIVE
            else f"{b.number:02X}={b.value.hex()}"
            for b in self.bmps
        )
        return f"Message({self.command:04X}, prefix={self.prefix.hex()}, bmps=[{shown}])"

    # ---- BMP access -------------------------------------------------------------------

    def get(self, number: int) -> bytes | None:
        for bmp in self.bmps:
            if bmp.number == number:
                return bmp.value
        return None

    def _bcd(self, number: int) -> int | None:
        value = self.get(number)
        return None if value is None else bcd_decode(value, f"BMP {number:02X}")

    def _byte(self, number: int) -> int | None:
        value = self.get(number)
        return None if value is None else value[0]

    def _text(self, number: int) -> str | None:
        value = self.get(number)
        return None if value is None else self.text_of(value).rstrip()

    @property
    def totals(self) -> Totals | None:
        """BMP 60 after End-of-Day: the receipt range and, per card group, count and amount."""
        raw = self.get(0x60)
        if raw is None or len(raw) < 4 + 7 * len(TOTALS_GROUPS):
            return None
        groups = []
        for i, name in enumerate(TOTALS_GROUPS):
            at = 4 + 7 * i
            groups.append((name, raw[at], bcd_decode(raw[at + 1 : at + 7], "BMP 60 total")))
        return Totals(
            bcd_decode(raw[0:2], "BMP 60 receipt"),
            bcd_decode(raw[2:4], "BMP 60 receipt"),
            tuple(groups),
        )

    @property
    def result_code(self) -> int | None:
        if self.command == Command.ABORT_PT:
            return self.prefix[0] if self.prefix else None
        if self.command >> 8 == 0x84:
            return nack_result(self.command & 0xFF, self.prefix)
        return self._byte(0x27)

    @property
    def amount(self) -> int | None:
        return self._bcd(0x04)

    @property
    def currency(self) -> int | None:
        return self._bcd(0x49)

    @property
    def receipt_number(self) -> int | None:
        value = self.get(0x87)
        if value is None:
            return None
        if value == b"\xff\xff":
            return RECEIPT_NONE
        return bcd_decode(value, "BMP 87")

    @property
    def trace_number(self) -> int | None:
        return self._bcd(0x0B)

    @property
    def terminal_id(self) -> str | None:
        value = self.get(0x29)
        return None if value is None else f"{bcd_decode(value, 'BMP 29'):08d}"

    @property
    def aid(self) -> str | None:
        return self._text(0x3B)

    @property
    def card_type(self) -> int | None:
        return self._byte(0x8A)

    @property
    def card_name(self) -> str | None:
        name = self._text(0x8B)
        if name:
            return name
        card_type = self.card_type
        return CARD_TYPES.get(card_type) if card_type is not None else None

    @property
    def payment_type(self) -> int | None:
        return self._byte(0x19)

    @property
    def vu_number(self) -> str | None:
        return self._text(0x2A)

    @property
    def additional_text(self) -> str | None:
        return self._text(0x3C)

    @property
    def masked_pan(self) -> str | None:
        """First 6 and last 4 digits only, whatever the terminal sent."""
        value = self.get(0x22)
        if value is None:
            return None
        digits = bcd_digits(value)
        if len(digits) < 10:
            return "*" * len(digits)
        return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]

    @property
    def tx_date(self) -> tuple[int, int] | None:
        """(month, day) — BMP 0D carries no year."""
        value = self.get(0x0D)
        if value is None:
            return None
        mmdd = f"{bcd_decode(value, 'BMP 0D'):04d}"
        return int(mmdd[:2]), int(mmdd[2:])

    @property
    def tx_time(self) -> time | None:
        value = self.get(0x0C)
        if value is None:
            return None
        hhmmss = f"{bcd_decode(value, 'BMP 0C'):06d}"
        try:
            return time(int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:]))
        except ValueError:
            raise ZvtDecodeError("BMP 0C", f"not a time: {hhmmss}") from None

    @property
    def tlv(self) -> tuple[Tlv, ...]:
        value = self.get(0x06)
        return () if value is None else decode_tlv(value, "BMP 06")

    @property
    def status_byte(self) -> int | None:
        """06 0F after Registration: BMP 19 is the PT's status byte."""
        return self._byte(0x19)

    # ---- positional views ---------------------------------------------------------------

    @property
    def password(self) -> str | None:
        if self.command in PASSWORD_COMMANDS or self.command in (
            Command.REGISTRATION,
            Command.STATUS_ENQUIRY,
        ):
            return self.prefix[:3].hex() if len(self.prefix) >= 3 else None
        return None

    @property
    def config_byte(self) -> int | None:
        return (
            self.prefix[3]
            if self.command == Command.REGISTRATION and len(self.prefix) >= 4
            else None
        )

    @property
    def registration_currency(self) -> int | None:
        if self.command == Command.REGISTRATION and len(self.prefix) == 6:
            return bcd_decode(self.prefix[4:6], "registration currency")
        return None

    @property
    def intermediate_status(self) -> int | None:
        return (
            self.prefix[0] if self.command == Command.INTERMEDIATE_STATUS and self.prefix else None
        )

    @property
    def print_line(self) -> tuple[int, str] | None:
        if self.command != Command.PRINT_LINE or not self.prefix:
            return None
        return self.prefix[0], self.text_of(self.prefix[1:])

    @property
    def software_version(self) -> str | None:
        """05 01 completion: positional LLLVAR software version before the status byte."""
        if self.command != Command.COMPLETION or len(self.prefix) < 2:
            return None
        text, _ = read_llvar(self.prefix, 0, 3, "software version")
        return self.text_of(text)

    @property
    def terminal_status(self) -> int | None:
        """05 01's completion: the byte after the software version, or the only positional byte
        when the terminal leaves the version out (``06 0F 01 DC``: card inserted)."""
        if self.command == Command.COMPLETION and self.prefix:
            return self.prefix[-1]
        return None

    @property
    def text_lines(self) -> list[str]:
        """Lines of a print text block (06 D3, TLV 25 → 07 lines) or display text (04 FF TLV 24)."""
        lines: list[str] = []
        tlv = self.tlv
        charset = self.text_charset  # once, not per line: a receipt has a hundred of them
        for container in (find_tlv(tlv, 0x25), find_tlv(tlv, 0x24)):
            if container is not None:
                lines += [
                    decode_text(c.value.rstrip(b"\x00"), charset)
                    for c in container.children
                    if c.tag == 0x07
                ]
        return lines

    @property
    def open_preauths(self) -> list[int]:
        """06 1E B8 reply to the open pre-auth enquiry: the receipts still open."""
        found: list[int] = []
        first = self.receipt_number
        if first is not None and first != RECEIPT_NONE:
            found.append(first)
        listing = find_tlv(self.tlv, 0x23)
        for entry in listing.children if listing else ():
            if entry.tag == 0x08:
                number = bcd_decode(entry.value, "TLV 23/08")
                if number not in found:
                    found.append(number)
        return found


@functools.cache
def _label(command: int) -> str:
    """How errors name the APDU; cached because every decode passes it down."""
    return f"APDU {command >> 8:02X} {command & 0xFF:02X}"


def decode(raw: bytes, charset: str = DEFAULT_CHARSET) -> Message:
    return Message.from_apdu(Apdu.decode(raw), charset)


# ---- builders: ECR → PT -----------------------------------------------------------------


def is_password(text: str) -> bool:
    """A ZVT password is 6 digits, sent as 3 BCD bytes; the config check and the CLI ask here."""
    return len(text) == 6 and text.isdigit()


def _password(password: str) -> bytes:
    if not is_password(password):
        raise ValueError("a ZVT password is 6 digits")
    return bytes.fromhex(password)


def _amount(minor: int) -> Bmp:
    return Bmp(0x04, bcd_encode(minor, 6))


def _currency(numeric: int) -> Bmp:
    return Bmp(0x49, bcd_encode(numeric, 2))


def _receipt(number: int) -> Bmp:
    return Bmp(0x87, b"\xff\xff" if number == RECEIPT_NONE else bcd_encode(number, 2))


def _tlv(objects: Sequence[Tlv]) -> list[Bmp]:
    return [Bmp(0x06, encode_tlv(list(objects)))] if objects else []


def reference_tlv(prefix: str, reference: str) -> Tlv:
    """BMP60 reference (E9{1F62, 1F63}): ties the acquirer's statement to our session."""
    return Tlv(
        0xE9, children=(Tlv(0x1F62, prefix.encode("ascii")), Tlv(0x1F63, reference.encode("ascii")))
    )


def registration(
    password: str,
    config_byte: int,
    currency: int | None = 978,
    service_byte: int | None = None,
    tlv: Sequence[Tlv] = (),
) -> Message:
    prefix = _password(password) + bytes([config_byte])
    if currency is not None:
        prefix += bcd_encode(currency, 2)
    elif service_byte is not None or tlv:
        raise ValueError("registration: service byte or TLV needs the currency")
    bmps = ([Bmp(0x03, bytes([service_byte]))] if service_byte is not None else []) + _tlv(tlv)
    return Message(Command.REGISTRATION, prefix, tuple(bmps))


def log_off() -> Message:
    return Message(Command.LOG_OFF)


def status_enquiry(password: str | None = None, service_byte: int | None = None) -> Message:
    prefix = _password(password) if password else b""
    bmps = (Bmp(0x03, bytes([service_byte])),) if service_byte is not None else ()
    return Message(Command.STATUS_ENQUIRY, prefix, bmps)


def authorization(amount: int, currency: int, payment_type: int = 0x40) -> Message:
    return Message(
        Command.AUTHORIZATION,
        b"",
        (_amount(amount), _currency(currency), Bmp(0x19, bytes([payment_type]))),
    )


def pre_authorisation(
    amount: int | None,
    currency: int,
    payment_type: int = 0x40,
    tlv: Sequence[Tlv] = (),
    trace: int | None = None,
) -> Message:
    """06 22; with ``trace`` (BMP 0B, the first reservation's trace number) an extension."""
    bmps = [Bmp(0x19, bytes([payment_type])), _currency(currency)]
    if amount is not None:
        bmps.append(_amount(amount))
    if trace is not None:
        bmps.append(bmp_bcd(0x0B, trace, 3))
    return Message(Command.PRE_AUTHORISATION, b"", tuple(bmps + _tlv(tlv)))


def partial_reversal(
    receipt: int, release: int, currency: int, payment_type: int = 0x40, tlv: Sequence[Tlv] = ()
) -> Message:
    """06 23: book the pre-auth ``receipt`` and release ``release`` minor units of it."""
    bmps = [
        Bmp(0x19, bytes([payment_type])),
        _receipt(receipt),
        _currency(currency),
        _amount(release),
    ]
    return Message(Command.PARTIAL_REVERSAL, b"", tuple(bmps + _tlv(tlv)))


def enquire_open_preauths() -> Message:
    """06 23 03 87 FF FF: the PT answers 06 1E B8 with the open receipts."""
    return Message(Command.PARTIAL_REVERSAL, b"", (_receipt(RECEIPT_NONE),))


def book_total(
    receipt: int, amount: int, currency: int, payment_type: int = 0x40, tlv: Sequence[Tlv] = ()
) -> Message:
    """06 24: capture ``amount`` (the used part) of pre-auth ``receipt``."""
    bmps = [
        _receipt(receipt),
        _amount(amount),
        _currency(currency),
        Bmp(0x19, bytes([payment_type])),
    ]
    return Message(Command.BOOK_TOTAL, b"", tuple(bmps + _tlv(tlv)))


def pre_auth_reversal(receipt: int, currency: int, payment_type: int = 0x40) -> Message:
    """06 25: release the whole pre-auth ``receipt``."""
    return Message(
        Command.PRE_AUTH_REVERSAL,
        b"",
        (Bmp(0x19, bytes([payment_type])), _receipt(receipt), _currency(currency)),
    )


def refund(password: str, amount: int, currency: int) -> Message:
    """06 31: a card-present refund (the card is presented at the terminal)."""
    return Message(Command.REFUND, _password(password), (_amount(amount), _currency(currency)))


def reversal(password: str, receipt: int) -> Message:
    return Message(Command.REVERSAL, _password(password), (_receipt(receipt),))


def abort() -> Message:
    return Message(Command.ABORT)


def end_of_day(password: str) -> Message:
    return Message(Command.END_OF_DAY, _password(password))


def diagnosis(kind: int | None = None) -> Message:
    return Message(
        Command.DIAGNOSIS, b"", tuple(_tlv([Tlv(0x1B, bytes([kind]))] if kind is not None else []))
    )


def repeat_receipt(password: str, service_byte: int = 0x01) -> Message:
    """06 20 with service bit 0: the PT repeats its last 04 0F (resynchronisation)."""
    return Message(Command.REPEAT_RECEIPT, _password(password), (Bmp(0x03, bytes([service_byte])),))


def display_text(
    lines: Sequence[str], duration_s: int = 0, charset: str = DEFAULT_CHARSET
) -> Message:
    if not 1 <= len(lines) <= 8:
        raise ValueError("display text takes 1 to 8 lines")
    bmps = [Bmp(0xF0, bytes([duration_s]))]
    bmps += [Bmp(0xF1 + i, encode_text(line, charset)) for i, line in enumerate(lines)]
    return Message(Command.DISPLAY_TEXT, b"", tuple(bmps))


def print_text_block(
    lines: Sequence[str],
    receipt_type: int = 0x02,
    charset: str = DEFAULT_CHARSET,
    announce: bool = False,
) -> Message:
    """06 D3 text block (TLV 25 of 07 lines, ended by 09 FF): receipt text with fiscal data;
    with ``announce`` the block names its character set (TLV 14)."""
    body = (*(Tlv(0x07, encode_text(line, charset)) for line in lines), Tlv(0x09, b"\xff"))
    head = [Tlv(0x1F07, bytes([receipt_type]))]
    if announce:
        head.append(Tlv(ANNOUNCEMENT_TAG, bytes([announcement_code(charset)])))
    return Message(
        Command.PRINT_TEXT_BLOCK, b"", tuple(_tlv([*head, Tlv(0x25, children=body)])), charset
    )


def read_card(
    timeout_s: int,
    card_type: int | None = None,
    dialog_control: int | None = None,
    tlv: Sequence[Tlv] = (),
) -> Message:
    bmps = []
    if card_type is not None:
        bmps.append(Bmp(0x19, bytes([card_type])))
    if dialog_control is not None:
        bmps.append(Bmp(0xFC, bytes([dialog_control])))
    return Message(Command.READ_CARD, bytes([timeout_s]), tuple(bmps + _tlv(tlv)))


# ---- builders: PT → ECR (the simulator) ------------------------------------------------


def ack() -> Message:
    return Message(Command.ACK)


def nack(code: int) -> Message:
    return Message(0x8400 | code)


def completion(bmps: Sequence[Bmp] = ()) -> Message:
    return Message(Command.COMPLETION, b"", tuple(bmps))


def status_completion(
    software_version: str | None, terminal_status: int, tlv: Sequence[Tlv] = ()
) -> Message:
    """05 01's answer; ``software_version=None`` is the form without it (``06 0F 01 DC``)."""
    if software_version is None:
        return Message(Command.COMPLETION, bytes([terminal_status]), tuple(_tlv(tlv)))
    raw = encode_text(software_version, DEFAULT_CHARSET)
    return Message(
        Command.COMPLETION,
        llvar_prefix(len(raw), 3) + raw + bytes([terminal_status]),
        tuple(_tlv(tlv)),
    )


def abort_pt(result_code: int, bmps: Sequence[Bmp] = ()) -> Message:
    return Message(Command.ABORT_PT, bytes([result_code]), tuple(bmps))


def intermediate(
    status: int, timeout_minutes: int | None = None, tlv: Sequence[Tlv] = ()
) -> Message:
    prefix = (
        bytes([status])
        if timeout_minutes is None
        else bytes([status]) + bcd_encode(timeout_minutes, 1)
    )
    return Message(Command.INTERMEDIATE_STATUS, prefix, tuple(_tlv(tlv)))


def status_information(bmps: Sequence[Bmp]) -> Message:
    return Message(Command.STATUS_INFORMATION, b"", tuple(bmps))


def print_line(
    attribute: int, text: str, tlv: Sequence[Tlv] = (), charset: str = DEFAULT_CHARSET
) -> Message:
    """06 D1; ``tlv`` (e.g. 1F07 receipt type) after the text, as CardComplete terminals send."""
    prefix = bytes([attribute]) + encode_text(text, charset)
    return Message(Command.PRINT_LINE, prefix, tuple(_tlv(tlv)), charset)


def bmp_amount(minor: int) -> Bmp:
    return _amount(minor)


def bmp_currency(numeric: int) -> Bmp:
    return _currency(numeric)


def bmp_receipt(number: int) -> Bmp:
    return _receipt(number)


def bmp_bcd(number: int, value: int, size: int) -> Bmp:
    return Bmp(number, bcd_encode(value, size))


def bmp_llvar(number: int, value: bytes) -> Bmp:
    return Bmp(number, value)


def bmp_date(d: date) -> Bmp:
    return Bmp(0x0D, bcd_encode(d.month * 100 + d.day, 2))


def bmp_time(t: time) -> Bmp:
    return Bmp(0x0C, bcd_encode(t.hour * 10000 + t.minute * 100 + t.second, 3))


def pan_bmp(pan_digits: str) -> Bmp:
    """The PT-side PAN field: digits with masked positions as '*' (sent as E nibbles)."""
    text = pan_digits.replace("*", "E")
    if len(text) % 2:
        text += "F"
    return Bmp(0x22, bytes.fromhex(text))
