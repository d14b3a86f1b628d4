"""Money as the driver interface carries it: integer minor units plus an ISO 4217 currency.

Never a float. A decimal string from a person (``"12.34"``) converts exactly or is refused:
``"12.345"`` in EUR is an error, not a rounding. Both the terminal drivers (ZVT needs the
numeric code and BCD minor units) and the gateway's pricing use this one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from drivers.errors import AmountError


@dataclass(frozen=True, slots=True)
class Currency:
    alpha: str
    numeric: int
    exponent: int


# ISO 4217 (alpha, numeric, minor-unit exponent) for the markets EV payment terminals serve.
_CURRENCIES = {
    c.alpha: c
    for c in (
        Currency("EUR", 978, 2),
        Currency("GBP", 826, 2),
        Currency("CHF", 756, 2),
        Currency("SEK", 752, 2),
        Currency("NOK", 578, 2),
        Currency("DKK", 208, 2),
        Currency("ISK", 352, 0),
        Currency("PLN", 985, 2),
        Currency("CZK", 203, 2),
        Currency("HUF", 348, 2),
        Currency("RON", 946, 2),
        Currency("BGN", 975, 2),
        Currency("TRY", 949, 2),
        Currency("USD", 840, 2),
        Currency("CAD", 124, 2),
        Currency("AUD", 36, 2),
        Currency("JPY", 392, 0),
        Currency("KWD", 414, 3),
    )
}
_BY_NUMERIC = {c.numeric: c for c in _CURRENCIES.values()}


def currency(alpha: str) -> Currency:
    """The currency for an ISO 4217 alpha code, or AmountError naming the known ones."""
    try:
        return _CURRENCIES[alpha.upper()]
    except KeyError:
        known = ", ".join(sorted(_CURRENCIES))
        raise AmountError(f"unknown currency {alpha!r}; known: {known}") from None


def currency_by_numeric(numeric: int) -> Currency:
    try:
        return _BY_NUMERIC[numeric]
    except KeyError:
        raise AmountError(f"unknown ISO 4217 numeric currency code {numeric:03d}") from None


def known_currencies() -> frozenset[str]:
    return frozenset(_CURRENCIES)


@dataclass(frozen=True, slots=True, order=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        currency(self.currency)  # validates the code
        if self.minor < 0:
            raise AmountError(f"amount must not be negative, got {self.minor} minor units")

    @classmethod
    def parse(cls, text: str, currency_alpha: str) -> Money:
        """Exact conversion of a decimal string in major units ("12.34") to minor units."""
        cur = currency(currency_alpha)
        try:
            value = Decimal(text.strip())
        except InvalidOperation:
            raise AmountError(f"{text!r} is not a decimal amount (write e.g. 12.34)") from None
        if not value.is_finite() or value < 0:
            raise AmountError(f"{text!r} is not a non-negative amount")
        minor = value.scaleb(cur.exponent)
        if minor != minor.to_integral_value():
            raise AmountError(
                f"{text!r} has more decimals than {cur.alpha} allows ({cur.exponent})"
            )
        return cls(int(minor), cur.alpha)

    def to_decimal(self) -> Decimal:
        return Decimal(self.minor).scaleb(-currency(self.currency).exponent)

    def __str__(self) -> str:
        exp = currency(self.currency).exponent
        return f"{self.to_decimal():.{exp}f} {self.currency}"
