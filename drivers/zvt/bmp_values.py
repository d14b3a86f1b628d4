"""BMPs built from values (amount, currency, receipt number, BCD, LLVAR, date, time, a masked
PAN) and TLV containers: what both sides' messages carry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, time

from drivers.zvt.constants import RECEIPT_NONE
from drivers.zvt.fields import Bmp, Tlv, bcd_encode, encode_tlv


def _amount(minor: int) -> Bmp:
    return Bmp(0x04, bcd_encode(minor, 6))


def _currency(numeric: int) -> Bmp:
    return Bmp(0x49, bcd_encode(numeric, 2))


def _receipt(number: int) -> Bmp:
    return Bmp(0x87, b"\xff\xff" if number == RECEIPT_NONE else bcd_encode(number, 2))


def _tlv(objects: Sequence[Tlv]) -> list[Bmp]:
    return [Bmp(0x06, encode_tlv(list(objects)))] if objects else []


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
