"""The tariff as the driver reads it before charging (the charger's screen, the receipt): each
price gross, with when it applies, in the currency's and the tariff's own precision. Pure."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

from drivers.money import currency as currency_info
from gateway.payments.tariff import Dimension, Tariff
from gateway.payments.tariff_restrictions import DAYS, Restrictions


def describe(tariff: Tariff, limit: int = 6) -> list[str]:
    """The tariff in a few short lines for the charger's screen (the price is shown before
    charging starts): each component once, gross (VAT included), with *when* it applies (every
    restriction: a weekday-only price and the fallback must not read as two prices for the same
    thing); a price that only applies when the ones above do not says "otherwise"."""
    units = {
        Dimension.ENERGY: "/kWh",
        Dimension.TIME: "/h charging",
        Dimension.PARKING_TIME: "/h parking",
        Dimension.FLAT: " start fee",
    }
    lines: list[str] = []
    conditioned: set[Dimension] = set()
    for element in tariff.elements:
        when = _when(element.restrictions)
        for c in element.components:
            gross = shown_price(c.gross(c.price), tariff.currency)
            tail = when or (" otherwise" if c.type in conditioned else "")
            line = f"{gross} {tariff.currency}{units[c.type]}{tail}"[:64]
            if when:
                conditioned.add(c.type)
            if line not in lines:
                lines.append(line)
    return lines[:limit]


_SHORT_DAYS = tuple(d[:3].title() for d in DAYS)


def _when(r: Restrictions) -> str:
    """A restriction in words, short: " Mon-Fri 22:00-06:00 from 0.5 kWh"."""
    parts: list[str] = []
    days = [n for n, d in enumerate(DAYS) if d in r.day_of_week]
    if days:
        contiguous = days == list(range(days[0], days[-1] + 1)) and len(days) > 2
        parts.append(
            f"{_SHORT_DAYS[days[0]]}-{_SHORT_DAYS[days[-1]]}"
            if contiguous
            else ",".join(_SHORT_DAYS[n] for n in days)
        )
    if r.start_time is not None or r.end_time is not None:
        parts.append(f"{r.start_time or time(0):%H:%M}-{r.end_time or time(0):%H:%M}")
    if r.start_date is not None:
        parts.append(f"from {r.start_date}")
    if r.end_date is not None:
        parts.append(f"before {r.end_date}")
    for low, high, unit in (
        (r.min_kwh, r.max_kwh, "kWh"),
        (r.min_power, r.max_power, "kW"),
    ):
        if low is not None:
            parts.append(f"from {low.normalize():f} {unit}")
        if high is not None:
            parts.append(f"below {high.normalize():f} {unit}")
    if r.min_duration is not None:
        parts.append(f"after {r.min_duration // 60} min")
    if r.max_duration is not None:
        parts.append(f"first {r.max_duration // 60} min")
    return "".join(f" {p}" for p in parts)


def shown_price(amount: Decimal, currency: str) -> str:
    """A unit price as the driver must see it before charging: never fewer decimals than the
    currency has (0.50 EUR, 45 JPY, 0.125 KWD) and never fewer than the tariff itself gives
    (0.3859 EUR/kWh is not 0.39): rounding a unit price misstates every kWh billed."""
    exponent = currency_info(currency).exponent
    own = -amount.normalize().as_tuple().exponent  # type: ignore[operator]
    places = max(exponent, int(own))
    return format(amount.quantize(Decimal(1).scaleb(-places)), "f")
