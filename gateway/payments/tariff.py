"""OCPI tariffs (mod_tariffs, 2.2.1/2.3.0 shape) priced exactly: ``Decimal`` throughout,
rounded once, half up, to the currency's minor unit at the very end.

One function, ``price``, prices the pre-authorisation target, the running cost and the final
capture, so the three can never disagree.

Rules (where OCPI leaves room, the choice is written here):
- A charging session is a series of meter samples (time, cumulative Wh), power constant
  between two samples. Intervals are cut where a restriction changes (a start/end time of
  day, local midnight for a weekday or date restriction, a min/max duration, a min/max kWh),
  and each piece is priced with the *first* tariff
  element whose restrictions hold at its start (local time, weekday, kWh so far, duration so
  far, the interval's power).
- ENERGY is billed per kWh for the energy of the interval; TIME per hour while energy flows;
  PARKING_TIME per hour while it does not (hours that elapsed: computed in UTC, so a DST night
  bills 23 or 25 hours, never wall-clock ones); FLAT once, from the first element active at start.
- ``step_size`` (Wh for energy, seconds for time) rounds the volume billed under each
  element's component up to a whole number of steps.
- VAT: a component's price is excluding VAT; ``vat`` is a percentage; absent = not applicable.
- ``min_price``/``max_price`` bound the total excluding VAT; the total including VAT is
  scaled by the same factor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from enum import StrEnum
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from drivers.money import currency as currency_info

_HOUR = Decimal(3600)
_KWH = Decimal(1000)
_DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


class Dimension(StrEnum):
    ENERGY = "ENERGY"
    FLAT = "FLAT"
    TIME = "TIME"
    PARKING_TIME = "PARKING_TIME"


@dataclass(frozen=True, slots=True)
class PriceComponent:
    type: Dimension
    price: Decimal  # excluding VAT, per kWh / per hour / once
    vat: Decimal | None = None
    step_size: int = 1


@dataclass(frozen=True, slots=True)
class Restrictions:
    start_time: time | None = None
    end_time: time | None = None
    start_date: date | None = None
    end_date: date | None = None
    min_kwh: Decimal | None = None
    max_kwh: Decimal | None = None
    min_power: Decimal | None = None  # kW
    max_power: Decimal | None = None
    min_duration: int | None = None  # seconds
    max_duration: int | None = None
    day_of_week: frozenset[str] = frozenset()

    def allow(
        self, local: datetime, kwh: Decimal, duration_s: int, power_kw: Decimal | None
    ) -> bool:
        if self.start_time is not None or self.end_time is not None:
            now = local.time()
            start, end = self.start_time or time(0), self.end_time or time(0)
            inside = (
                start <= now < end if start < end else (now >= start or now < end)
            )  # may wrap midnight
            if start == end:
                inside = True
            if not inside:
                return False
        if self.start_date is not None and local.date() < self.start_date:
            return False
        if self.end_date is not None and local.date() >= self.end_date:
            return False
        if self.day_of_week and _DAYS[local.weekday()] not in self.day_of_week:
            return False
        if self.min_kwh is not None and kwh < self.min_kwh:
            return False
        if self.max_kwh is not None and kwh >= self.max_kwh:
            return False
        if self.min_duration is not None and duration_s < self.min_duration:
            return False
        if self.max_duration is not None and duration_s >= self.max_duration:
            return False
        if power_kw is not None:
            if self.min_power is not None and power_kw < self.min_power:
                return False
            if self.max_power is not None and power_kw >= self.max_power:
                return False
        return True


@dataclass(frozen=True, slots=True)
class TariffElement:
    components: tuple[PriceComponent, ...]
    restrictions: Restrictions = Restrictions()

    def component(self, dim: Dimension) -> PriceComponent | None:
        return next((c for c in self.components if c.type is dim), None)


@dataclass(frozen=True, slots=True)
class Tariff:
    id: str
    currency: str
    elements: tuple[TariffElement, ...]
    min_price: Decimal | None = None  # excluding VAT
    max_price: Decimal | None = None
    preauthorize_amount: Decimal | None = None  # payments edition: what the PTP should hold (gross)


@dataclass(frozen=True, slots=True)
class Sample:
    at: datetime  # aware
    energy_wh: int  # cumulative since the session started


@dataclass(frozen=True, slots=True)
class Price:
    excl_vat: Decimal
    incl_vat: Decimal
    minor: int  # incl. VAT, rounded once: what the driver pays
    currency: str
    lines: tuple[tuple[str, Decimal, Decimal], ...] = field(default=())  # (dimension, volume, excl)
    nets: tuple[tuple[Decimal | None, Decimal], ...] = field(
        default=()
    )  # (VAT rate, excl) per component


def price(tariff: Tariff, samples: Sequence[Sample], tz: ZoneInfo) -> Price:
    """The price of a session described by its meter samples."""
    return _total(tariff, _volumes(tariff, samples, tz))


Volumes = dict[tuple[int, Dimension], Decimal]  # billed volume by (tariff element, dimension)


def _volumes(tariff: Tariff, samples: Sequence[Sample], tz: ZoneInfo) -> Volumes:
    volumes: Volumes = {}
    if samples:
        _flat(tariff, samples[0], tz, volumes)
        for before, after in pairwise(samples):
            _add_interval(tariff, samples[0], before, after, tz, volumes)
    return volumes


def _flat(tariff: Tariff, start: Sample, tz: ZoneInfo, volumes: Volumes) -> None:
    for i, element in enumerate(tariff.elements):
        if element.component(Dimension.FLAT) and element.restrictions.allow(
            start.at.astimezone(tz), Decimal(0), 0, None
        ):
            volumes[(i, Dimension.FLAT)] = Decimal(1)
            return


def _add_interval(
    tariff: Tariff, start: Sample, before: Sample, after: Sample, tz: ZoneInfo, volumes: Volumes
) -> None:
    """Volumes are additive over intervals: a session's price is the sum over its samples' pairs."""
    # In UTC: two datetimes with the same ZoneInfo subtract as wall clocks, so a DST night
    # would bill an hour too many or too few. Elapsed time is what TIME/PARKING_TIME bill.
    points = [
        (s.at.astimezone(UTC), Decimal(s.energy_wh - start.energy_wh)) for s in (before, after)
    ]
    for piece in _pieces(tariff, start.at.astimezone(UTC), points[0], points[1], tz):
        _interval(tariff, start.at, piece, tz, volumes)


class Pricer:
    """``price``, remembering the volumes of the sample sequences it priced last, so that a
    session's next meter value costs one interval instead of the whole session again.

    Pure as ``price`` is (same samples, same price); the memory is a cache, bounded, keyed by
    the tariff object and the whole sample sequence, so nothing stale can be found in it."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._memo: dict[tuple[int, ZoneInfo, tuple[Sample, ...]], tuple[Tariff, Volumes]] = {}

    def price(self, tariff: Tariff, samples: Sequence[Sample], tz: ZoneInfo) -> Price:
        return _total(tariff, self._volumes(tariff, tuple(samples), tz))

    def _volumes(self, tariff: Tariff, samples: tuple[Sample, ...], tz: ZoneInfo) -> Volumes:
        key = (id(tariff), tz, samples)
        found = self._memo.get(key)
        if found is not None and found[0] is tariff:
            return found[1]
        prefix = self._memo.pop((id(tariff), tz, samples[:-1]), None) if len(samples) > 1 else None
        if prefix is not None and prefix[0] is tariff:
            volumes = dict(prefix[1])
            _add_interval(tariff, samples[0], samples[-2], samples[-1], tz, volumes)
        else:
            volumes = _volumes(tariff, samples, tz)
        if len(self._memo) >= self._size:
            del self._memo[next(iter(self._memo))]  # the oldest entry
        self._memo[key] = (tariff, volumes)
        return volumes


def _microseconds(span: timedelta) -> int:
    """A duration as an exact integer (timedelta.total_seconds() is a float)."""
    return span // timedelta(microseconds=1)


Point = tuple[datetime, Decimal]  # (time, Wh since the start of the session)


def _pieces(
    tariff: Tariff, start: datetime, before: Point, after: Point, tz: ZoneInfo
) -> list[tuple[Point, Point]]:
    """Cut one interval where any element's restriction boundary falls inside it."""
    (t0, e0), (t1, e1) = before, after
    span = _microseconds(t1 - t0)
    if span <= 0:
        return [(before, after)]
    cuts: set[datetime] = set()
    for element in tariff.elements:
        r = element.restrictions
        for seconds in (r.min_duration, r.max_duration):
            if seconds is not None:
                cuts.add(start + timedelta(seconds=seconds))
        for kwh in (r.min_kwh, r.max_kwh):
            if kwh is not None and e0 < kwh * _KWH < e1:
                cuts.add(t0 + timedelta(microseconds=int((kwh * _KWH - e0) * span / (e1 - e0))))
        clocks = [c for c in (r.start_time, r.end_time) if c is not None]
        if r.day_of_week or r.start_date is not None or r.end_date is not None:
            clocks.append(time(0))  # a weekday or a date changes at local midnight
        for clock in clocks:
            day = t0.astimezone(tz).date()
            while (at := datetime.combine(day, clock, tz).astimezone(UTC)) < t1:
                cuts.add(at)
                day += timedelta(days=1)
    inside = sorted(cut for cut in cuts if t0 < cut < t1)
    points = [before]
    for cut in inside:
        fraction = Decimal(_microseconds(cut - t0)) / Decimal(span)
        points.append((cut, e0 + (e1 - e0) * fraction))
    points.append(after)
    return list(pairwise(points))


def _interval(
    tariff: Tariff,
    start: datetime,
    piece: tuple[Point, Point],
    tz: ZoneInfo,
    volumes: dict[tuple[int, Dimension], Decimal],
) -> None:
    (t0, e0), (t1, e1) = piece
    seconds = Decimal(_microseconds(t1 - t0)) / 1_000_000 if t1 > t0 else Decimal(0)
    wh = max(Decimal(0), e1 - e0)
    power = (wh / _KWH) / (seconds / _HOUR) if seconds else None
    context = (t0.astimezone(tz), e0 / _KWH, (t0 - start) // timedelta(seconds=1), power)
    time_dim = Dimension.TIME if wh > 0 else Dimension.PARKING_TIME
    for dim, volume in ((Dimension.ENERGY, wh), (time_dim, seconds)):
        if volume == 0:
            continue
        for i, element in enumerate(tariff.elements):
            if element.component(dim) and element.restrictions.allow(*context):
                volumes[(i, dim)] = volumes.get((i, dim), Decimal(0)) + volume
                break


def _total(tariff: Tariff, volumes: Mapping[tuple[int, Dimension], Decimal]) -> Price:
    excl = incl = Decimal(0)
    lines = []
    nets: list[tuple[Decimal | None, Decimal]] = []
    for (i, dim), volume in sorted(volumes.items()):
        comp = tariff.elements[i].component(dim)
        if comp is None:  # volumes are only recorded for elements that have the component
            continue
        step = Decimal(comp.step_size or 1)
        billed = (
            (volume / step).to_integral_value(ROUND_CEILING) * step
            if dim is not Dimension.FLAT
            else volume
        )
        unit = {Dimension.ENERGY: _KWH, Dimension.FLAT: Decimal(1)}.get(dim, _HOUR)
        cost = billed / unit * comp.price
        excl += cost
        incl += cost * (1 + (comp.vat or Decimal(0)) / 100)
        lines.append((dim.value, billed, cost))
        nets.append((comp.vat, cost))
    bounded = excl
    if tariff.min_price is not None and excl < tariff.min_price:
        bounded = tariff.min_price
    if tariff.max_price is not None and excl > tariff.max_price:
        bounded = tariff.max_price
    if bounded != excl:
        incl = incl * bounded / excl if excl else bounded
        nets = [(rate, net * bounded / excl) for rate, net in nets] if excl else [(None, bounded)]
        excl = bounded
    exponent = currency_info(tariff.currency).exponent
    minor = int((incl.scaleb(exponent)).to_integral_value(ROUND_HALF_UP))
    return Price(excl, incl, minor, tariff.currency, tuple(lines), tuple(nets))


def session_samples(start: datetime, energy_wh: int, duration: timedelta) -> list[Sample]:
    """A flat profile: ``energy_wh`` delivered evenly over ``duration`` (for pre-auth targets)."""
    return [Sample(start, 0), Sample(start + duration, energy_wh)]


# ---- OCPI JSON → Tariff (the boundary: the OCPI models of the upstream issue reuse this) ----


def tariff_from_ocpi(obj: Mapping[str, Any]) -> Tariff:
    """Build a Tariff from an OCPI Tariff object (dict). ValueError names the bad field."""
    try:
        elements = tuple(_element(e) for e in obj["elements"])
        return Tariff(
            id=str(obj["id"]),
            currency=str(obj["currency"]),
            elements=elements,
            min_price=_price_excl(obj.get("min_price")),
            max_price=_price_excl(obj.get("max_price")),
            preauthorize_amount=None
            if obj.get("preauthorize_amount") is None
            else Decimal(str(obj["preauthorize_amount"])),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(f"tariff {obj.get('id', '?')}: {type(exc).__name__} {exc}") from None


def _price_excl(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(
        value, Mapping
    ):  # {"excl_vat": .., "incl_vat": ..} (2.2.1) or {"before_taxes": ..} (2.3.0)
        raw = value.get("excl_vat", value.get("before_taxes"))
        return None if raw is None else Decimal(str(raw))
    return Decimal(str(value))


def _element(e: Mapping[str, Any]) -> TariffElement:
    comps = tuple(
        PriceComponent(
            Dimension(c["type"]),
            Decimal(str(c["price"])),
            None if c.get("vat") is None else Decimal(str(c["vat"])),
            int(c.get("step_size", 1)),
        )
        for c in e["price_components"]
    )
    r = e.get("restrictions") or {}

    def dec(key: str) -> Decimal | None:
        return None if r.get(key) is None else Decimal(str(r[key]))

    def clock(key: str) -> time | None:
        return None if r.get(key) is None else time.fromisoformat(r[key])

    def day(key: str) -> date | None:
        return None if r.get(key) is None else date.fromisoformat(r[key])

    restrictions = Restrictions(
        start_time=clock("start_time"),
        end_time=clock("end_time"),
        start_date=day("start_date"),
        end_date=day("end_date"),
        min_kwh=dec("min_kwh"),
        max_kwh=dec("max_kwh"),
        min_power=dec("min_power"),
        max_power=dec("max_power"),
        min_duration=None if r.get("min_duration") is None else int(r["min_duration"]),
        max_duration=None if r.get("max_duration") is None else int(r["max_duration"]),
        day_of_week=frozenset(r.get("day_of_week") or ()),
    )
    return TariffElement(comps, restrictions)


def describe(tariff: Tariff, limit: int = 6) -> list[str]:
    """The tariff in a few short lines for the charger's screen (the price is shown before
    charging starts): each component once, gross (VAT included), with its restriction."""
    units = {
        Dimension.ENERGY: "/kWh",
        Dimension.TIME: "/h charging",
        Dimension.PARKING_TIME: "/h parking",
        Dimension.FLAT: " start fee",
    }
    lines: list[str] = []
    for element in tariff.elements:
        for c in element.components:
            gross = shown_price(c.price * (1 + (c.vat or Decimal(0)) / 100), tariff.currency)
            r = element.restrictions
            when = ""
            if r.start_time is not None and r.end_time is not None:
                when = f" {r.start_time:%H:%M}-{r.end_time:%H:%M}"
            elif r.min_duration is not None:
                when = f" after {r.min_duration // 60} min"
            line = f"{gross} {tariff.currency}{units[c.type]}{when}"[:64]
            if line not in lines:
                lines.append(line)
    return lines[:limit]


def shown_price(amount: Decimal, currency: str) -> str:
    """A unit price as the driver must see it before charging: never fewer decimals than the
    currency has (0.50 EUR, 45 JPY, 0.125 KWD) and never fewer than the tariff itself gives
    (0.3859 EUR/kWh is not 0.39): rounding a unit price misstates every kWh billed."""
    exponent = currency_info(currency).exponent
    own = -amount.normalize().as_tuple().exponent  # type: ignore[operator]
    places = max(exponent, int(own))
    return format(amount.quantize(Decimal(1).scaleb(-places)), "f")
