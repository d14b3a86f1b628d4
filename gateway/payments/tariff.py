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
  bills 23 or 25 hours, never wall-clock ones); FLAT once, from the first element whose
  restrictions hold at the start or become true during the session (a start fee after 0.5 kWh,
  a blocking fee after 4 h: OCPI restrictions say "if and when a TariffElement becomes active").
- Local time restrictions follow the wall clock across DST nights: a time of day that occurs
  twice (the autumn's repeated hour) is a boundary both times, and the instant the clock jumps
  is a boundary too (a window opening in the spring's missing hour opens when the clock passes).
- ``step_size`` (Wh for energy, seconds for time), as OCPI's worked examples apply it: only the
  element used last for a dimension rounds, and it rounds the session's *total* of that
  dimension (the earlier elements are billed exactly). The extra charging time that rounding
  bills covers as much parking time when the same element bills both (the spec's example 1:
  2 minutes parked are "within the extra 5 minutes of charging"); parking under another
  element is rounded on its own (the complex example: 147 min charging bill 150, 42 parked 45).
- Energy at a cut between two samples is kept to a micro-Wh (fixed point), so the pieces of an
  interval add up to its energy exactly and a rounding up never bills a step for a 1e-24 Wh.
- VAT: a component's price is excluding VAT; ``vat`` is a percentage; absent = not applicable.
  Under OCPI 2.3.0's ``tax_included: "YES"`` the price already includes its ``vat``: it is the
  gross as given (exactly: never divided and multiplied back), and its net is derived from it.
- ``min_price``/``max_price`` bound the total excluding VAT (the total including VAT is scaled by
  the same factor) and, when the tariff gives them, the total including VAT too (OCPI: "they
  both apply"). A bound given excluding VAT only, on a tariff with mixed VAT rates, is refused
  when the tariff is read (tariff_ocpi.py: the gross under it is not defined).
- Reading the OCPI JSON (and refusing what cannot be priced) is tariff_ocpi.py's.
- Elements with a ``reservation`` restriction price reservations, which this site does not sell:
  they are left out. ``min_current``/``max_current`` cannot be evaluated (the meter data has no
  current): such a tariff is refused (``UnpriceableTariff``), never priced as if they were absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo

from drivers.money import currency as currency_info
from gateway.payments.tariff_restrictions import Point, microseconds, pieces
from gateway.payments.tariff_restrictions import Restrictions as Restrictions  # re-exported

_HOUR = Decimal(3600)
_KWH = Decimal(1000)


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
    tax_included: bool = False  # ``price`` already includes ``vat`` (OCPI 2.3.0 tax_included)

    def gross(self, amount: Decimal) -> Decimal:
        """An amount at this component's price, including its VAT."""
        return amount if self.tax_included else amount * (1 + (self.vat or Decimal(0)) / 100)

    def net(self, amount: Decimal) -> Decimal:
        """An amount at this component's price, excluding its VAT."""
        return amount / (1 + (self.vat or Decimal(0)) / 100) if self.tax_included else amount


@dataclass(frozen=True, slots=True)
class TariffElement:
    components: tuple[PriceComponent, ...]
    restrictions: Restrictions = field(default_factory=Restrictions)

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
    min_price_incl: Decimal | None = None  # including VAT (OCPI: both bounds apply)
    max_price_incl: Decimal | None = None
    # why a pulled tariff cannot be priced here (a stand-in with no elements, kept only so that
    # the refusal is reported for the EVSEs that use it); ``price`` refuses it
    refused: str = ""


class UnpriceableTariff(ValueError):
    """A well-formed tariff this engine cannot price as its owner means it: refused (config
    validation fails; a pulled tariff is reported upstream), never priced without the rule."""

    def __init__(self, tariff_id: str, reason: str) -> None:
        super().__init__(f"tariff {tariff_id}: {reason}")
        self.tariff_id = tariff_id
        self.reason = reason


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
    _priceable(tariff)
    return _total(tariff, _volumes(tariff, samples, tz))


def _priceable(tariff: Tariff) -> None:
    if tariff.refused:
        raise UnpriceableTariff(tariff.id, tariff.refused)


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
    """Volumes are additive over intervals: a session's price is the sum over its samples' pairs.
    A reading repeated (same instant, same energy: a charger sending its last value twice) is
    no interval: priced, its zero-length point at the end could start a fee's element."""
    if before.at == after.at and before.energy_wh == after.energy_wh:
        return
    # In UTC: two datetimes with the same ZoneInfo subtract as wall clocks, so a DST night
    # would bill an hour too many or too few. Elapsed time is what TIME/PARKING_TIME bill.
    points = [
        (s.at.astimezone(UTC), Decimal(s.energy_wh - start.energy_wh)) for s in (before, after)
    ]
    for piece in pieces(
        [e.restrictions for e in tariff.elements],
        start.at.astimezone(UTC),
        points[0],
        points[1],
        tz,
    ):
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
        _priceable(tariff)
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


def _interval(
    tariff: Tariff,
    start: datetime,
    piece: tuple[Point, Point],
    tz: ZoneInfo,
    volumes: dict[tuple[int, Dimension], Decimal],
) -> None:
    (t0, e0), (t1, e1) = piece
    seconds = Decimal(microseconds(t1 - t0)) / 1_000_000 if t1 > t0 else Decimal(0)
    wh = max(Decimal(0), e1 - e0)
    power = (wh / _KWH) / (seconds / _HOUR) if seconds else None
    context = (t0.astimezone(tz), e0 / _KWH, (t0 - start) // timedelta(seconds=1), power)
    time_dim = Dimension.TIME if wh > 0 else Dimension.PARKING_TIME
    if not any(dim is Dimension.FLAT for _, dim in volumes):  # a fee that becomes active
        for i, element in enumerate(tariff.elements):
            if element.component(Dimension.FLAT) and element.restrictions.allow(*context):
                volumes[(i, Dimension.FLAT)] = Decimal(1)
                break
    for dim, volume in ((Dimension.ENERGY, wh), (time_dim, seconds)):
        if volume == 0:
            continue
        for i, element in enumerate(tariff.elements):
            if element.component(dim) and element.restrictions.allow(*context):
                _floor_at_switch(tariff, volumes, i, dim, context[1], context[2])
                # popped and set again: the dict's order says which element was used last
                volumes[(i, dim)] = volumes.pop((i, dim), Decimal(0)) + volume
                break


_FLOOR = -1  # volumes[(_FLOOR, dim)]: what an earlier element's step_size already billed


def _floor_at_switch(
    tariff: Tariff, volumes: Volumes, i: int, dim: Dimension, kwh: Decimal, seconds: int
) -> None:
    """Before element ``i`` takes over ``dim`` from an element whose own volume limit is reached
    (its ``max_kwh`` or its ``max_duration``, whichever dimension it bills: an energy tier may
    end by its duration, a time tier by its energy; or ``i``'s own ``min_kwh``/``min_duration``
    is reached just there), remember the volume the session was billed
    for up to here (that element's step_size rounding): the billed volume never goes below it
    (``_rounded``). An element left because the clock moved on is not such a limit."""
    used = [j for j, d in volumes if d is dim and j != _FLOOR]
    if not used or used[-1] == i:
        return
    r, n = tariff.elements[used[-1]].restrictions, tariff.elements[i].restrictions
    ended = (r.max_kwh is not None and kwh >= r.max_kwh) or (
        r.max_duration is not None and seconds >= r.max_duration
    )
    # the same tier written as the next element's own start (its min_kwh/min_duration, where
    # the piece is cut: ``tariff_restrictions``), not a change of the clock
    begins = (n.min_kwh is not None and kwh == n.min_kwh) or n.min_duration == seconds
    if ended or begins:
        billed = sum((v for (j, d), v in _rounded(tariff, volumes).items() if d is dim), Decimal(0))
        volumes[(_FLOOR, dim)] = max(volumes.get((_FLOOR, dim), Decimal(0)), billed)


def _rounded(tariff: Tariff, volumes: Mapping[tuple[int, Dimension], Decimal]) -> Volumes:
    """The volumes billed: ``step_size`` applied once per dimension, by the element used last,
    to the session's total of that dimension (OCPI's step_size examples: 16:55 + 10 min charging
    at 1.20/h then 2.40/h, 15-minute steps, bills 5 min + 10 min, not 5 min rounded up twice).

    OCPI 2.3.0 says a dimension is billed in blocks of ``step_size`` (consumed amounts rounded up
    to a multiple of it) and that the step_size of the last tariff element used for the dimension
    is the one applied. Its worked example 1 applies that across a change of the time of day
    even where it lowers the price (4 min before 17:00 would bill 30 min at 1.20/h, 0.60; the
    session billed at 17:10 costs 0.50), so a rule "never less than any earlier rounding" would
    contradict the spec and every CPO's CDR. The spec says nothing of an element that ends
    because its own volume is used up (``max_kwh``, ``max_duration``: "the first 1 kWh, in 5 kWh
    steps"). Read literally, 0.9 kWh costs 5 kWh and 1.1 kWh (the last 0.1 under a 1 Wh step)
    1.1 kWh: more energy for less money, as a tier's block vanishes. There we go beyond the spec:
    the billed volume is never less than what the session was billed for when such an element
    handed the dimension over (``_floor_at_switch``; also where the next element starts at its
    own ``min_kwh``/``min_duration``: the same tier written the other way); the element used
    last bills up to that floor. So a volume tier's block stays billed, and the spec's examples
    are unchanged."""
    billed: Volumes = {k: v for k, v in volumes.items() if k[0] != _FLOOR}
    floors = {dim: v for (i, dim), v in volumes.items() if i == _FLOOR}
    volumes = billed.copy()
    last = {dim: i for i, dim in volumes}  # the dict's order: the last element used wins
    credit = Decimal(0)  # charging time billed beyond the charged time covers parking time
    # (example 1: "within the extra 5 minutes of charging billed") when both are that element's;
    # the complex example rounds an other element's parking on its own (42 min bill 45)
    for dim in (Dimension.ENERGY, Dimension.TIME, Dimension.PARKING_TIME):
        if dim not in last:
            continue
        i = last[dim]
        comp = tariff.elements[i].component(dim)
        total = sum((v for (_, d), v in volumes.items() if d is dim), Decimal(0))
        step = Decimal((comp.step_size if comp else 1) or 1)
        wanted = max(Decimal(0), total - credit) if dim is Dimension.PARKING_TIME else total
        rounded = (wanted / step).to_integral_value(ROUND_CEILING) * step
        floored = max(rounded, floors.get(dim, Decimal(0)))
        billed[(i, dim)] = max(Decimal(0), floored - (total - volumes[(i, dim)]))
        if dim is Dimension.TIME and last.get(Dimension.PARKING_TIME) == i:
            credit = rounded - total
    return billed


def _total(tariff: Tariff, volumes: Mapping[tuple[int, Dimension], Decimal]) -> Price:
    excl = incl = Decimal(0)
    lines = []
    nets: list[tuple[Decimal | None, Decimal]] = []
    for (i, dim), billed in sorted(_rounded(tariff, volumes).items()):
        comp = tariff.elements[i].component(dim)
        if comp is None:  # volumes are only recorded for elements that have the component
            continue
        unit = {Dimension.ENERGY: _KWH, Dimension.FLAT: Decimal(1)}.get(dim, _HOUR)
        cost = billed * comp.price / unit  # multiplied first: 300 s x 1.20 / 3600 is 0.10 exactly
        incl += comp.gross(cost)
        cost = comp.net(cost)
        excl += cost
        lines.append((dim.value, billed, cost))
        nets.append((comp.vat, cost))
    bounded = excl
    if tariff.min_price is not None and excl < tariff.min_price:
        bounded = tariff.min_price
    if tariff.max_price is not None and excl > tariff.max_price:
        bounded = tariff.max_price
    if bounded != excl and excl:
        incl = incl * bounded / excl
        nets = [(rate, net * bounded / excl) for rate, net in nets]
        excl = bounded
    elif bounded != excl:  # nothing to scale by: the VAT rate every component has, if one
        rates = {c.vat for e in tariff.elements for c in e.components}
        rate = rates.pop() if len(rates) == 1 else None
        incl = bounded * (1 + (rate or Decimal(0)) / 100)
        nets, excl = [(rate, bounded)], bounded
    if tariff.max_price_incl is not None and incl > tariff.max_price_incl:
        incl = tariff.max_price_incl
    if tariff.min_price_incl is not None and incl < tariff.min_price_incl:
        incl = tariff.min_price_incl
    exponent = currency_info(tariff.currency).exponent
    minor = int((incl.scaleb(exponent)).to_integral_value(ROUND_HALF_UP))
    return Price(excl, incl, minor, tariff.currency, tuple(lines), tuple(nets))


def session_samples(start: datetime, energy_wh: int, duration: timedelta) -> list[Sample]:
    """A flat profile: ``energy_wh`` delivered evenly over ``duration`` (for pre-auth targets)."""
    return [Sample(start, 0), Sample(start + duration, energy_wh)]
