"""The commands the ECR (the gateway) sends the PT, each built as a ``Message``: registration,
status, pre-authorisation and its completions, refund, reversal, abort, end of day, display and
print, read card; and the BMPs they carry."""

from __future__ import annotations

from collections.abc import Sequence

from drivers.zvt.bmp_values import _amount, _currency, _receipt, _tlv, bmp_bcd
from drivers.zvt.charset import ANNOUNCEMENT_TAG, DEFAULT_CHARSET, announcement_code, encode_text
from drivers.zvt.constants import RECEIPT_NONE, Command
from drivers.zvt.fields import Bmp, Tlv, bcd_encode
from drivers.zvt.message_view import Message


def is_password(text: str) -> bool:
    """A ZVT password is 6 digits, sent as 3 BCD bytes; the config check and the CLI ask here."""
    return len(text) == 6 and text.isdigit()


def _password(password: str) -> bytes:
    if not is_password(password):
        raise ValueError("a ZVT password is 6 digits")
    return bytes.fromhex(password)


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
