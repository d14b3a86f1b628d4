"""A ZVT message and its typed views: a command code, the positional fields some commands
carry before their BMPs and the BMPs in wire order, decoded and encoded exactly; the typed
properties read BMPs on demand, and card data never leaves unmasked (``masked_pan``: first 6,
last 4; no track data accessor; ``repr`` hides BMPs 22/23/24/2D)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import time

from drivers.zvt.apdu import Apdu
from drivers.zvt.charset import ANNOUNCEMENT_TAG, DEFAULT_CHARSET, announced, decode_text
from drivers.zvt.constants import RECEIPT_NONE, Command
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import (
    Bmp,
    Tlv,
    bcd_decode,
    bcd_digits,
    decode_bmps,
    decode_tlv,
    encode_bmps,
    find_tlv,
    read_llvar,
)
from drivers.zvt.positional import PASSWORD_COMMANDS, nack_result, prefix_size, print_line_size

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
        """BMP 60 after End-of-Day: the receipt range and, per card group, count and amount.
        The count is one binary byte: past 255 payments it wraps or saturates (the gateway reads
        it against its journal); the amount is exact."""
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
    def lists_open_preauths(self) -> bool:
        """Does this 06 1E B8 carry the enquiry's answer (BMP 87, FF FF when none is open, or
        the TLV 23 list)? A bare ``06 1E 01 B8`` is the same code a failed booking of an unknown
        receipt ends with: it lists nothing, so it cannot say that nothing is open."""
        return self.get(0x87) is not None or find_tlv(self.tlv, 0x23) is not None

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
