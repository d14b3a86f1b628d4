from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import AmountError, DeviceUrlError
from drivers.money import Money, currency
from drivers.transport.url import SerialUrl, TcpUrl, UsbUrl, parse_device_url


def test_parse_amounts_exactly() -> None:
    assert Money.parse("12.34", "EUR") == Money(1234, "EUR")
    assert Money.parse("0.1", "EUR").minor == 10
    assert Money.parse("1000", "JPY") == Money(1000, "JPY")
    assert Money.parse("1.234", "KWD").minor == 1234
    assert str(Money(1234, "EUR")) == "12.34 EUR"


@pytest.mark.parametrize("bad", ["12.345", "abc", "-1", "NaN", "Infinity", ""])
def test_bad_amounts_are_refused(bad: str) -> None:
    with pytest.raises(AmountError):
        Money.parse(bad, "EUR")


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(AmountError, match="known: "):
        currency("XYZ")


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(["EUR", "JPY", "KWD", "GBP"]))
def test_minor_units_roundtrip_through_text(minor: int, cur: str) -> None:
    m = Money(minor, cur)
    assert Money.parse(str(m.to_decimal()), cur) == m
    assert m.to_decimal() == Decimal(minor).scaleb(-currency(cur).exponent)


def test_device_urls() -> None:
    assert parse_device_url("serial:///dev/ttyUSB0?baud=115200&stopbits=1") == SerialUrl(
        "/dev/ttyUSB0", 115200, "N", 1
    )
    assert parse_device_url("serial:///dev/ttyACM0") == SerialUrl("/dev/ttyACM0", 9600, "N", 2)
    assert parse_device_url("tcp://10.0.0.5:20007") == TcpUrl("10.0.0.5", 20007)
    assert parse_device_url("usb://0x0403:0x6001") == UsbUrl(vid=0x0403, pid=0x6001)
    assert parse_device_url("usb://bus/1-1.2") == UsbUrl(bus_path="1-1.2")


@pytest.mark.parametrize(
    "bad",
    [
        "ttyUSB0",
        "serial://dev/x",
        "serial:///dev/x?baud=7",
        "serial:///dev/x?speed=9600",
        "tcp://host",
        "tcp://:20007",
        "usb://0403",
        "usb://zz:yy",
        "http://x",
    ],
)
def test_bad_device_urls(bad: str) -> None:
    with pytest.raises(DeviceUrlError):
        parse_device_url(bad)
