"""An independent reference model of what a finished session's money must be (issue 26).

The deterministic simulation used to check only invariants the engine asserts itself, so a
wrong rule the engine applied consistently passed it. This model says, from the outside, what
the money must be: the price from the OCPI tariff (its JSON, not the engine's objects) and the
meter readings, including time-of-day, weekday and date restrictions cut at local midnight and
elapsed (not wall-clock) hours across DST nights; then the capture of each hold (filled in
order), what is released, owed and refunded, and the Financial Advice Confirmation the CPO must
get. It imports nothing of the engine's pricing or session code on purpose: only the currency
exponents (drivers/money.py) are shared. Written from the rules in docs and the OCPI spec, not
from gateway/payments/tariff.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from drivers.money import currency as currency_info

WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


# ---- the price ---------------------------------------------------------------------------------


def _d(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _bound(value: Any) -> Decimal | None:
    if isinstance(value, Mapping):
        return _d(value.get("excl_vat", value.get("before_taxes")))
    return _d(value)


def _bound_incl(value: Any) -> Decimal | None:
    """OCPI: min/max_price bind the total including VAT as well, when given."""
    if not isinstance(value, Mapping):
        return None
    for key in ("after_taxes", "incl_vat"):
        if value.get(key) is not None:
            return _d(value[key])
    if value.get("taxes") and value.get("before_taxes") is not None:
        return Decimal(str(value["before_taxes"])) + sum(
            Decimal(str(t["amount"])) for t in value["taxes"]
        )
    return None


@dataclass(frozen=True)
class _Where:
    """What a restriction looks at, at the start of a piece of the session."""

    local: datetime
    kwh: Decimal
    seconds: int
    kw: Decimal | None


def _holds(r: Mapping[str, Any], at: _Where) -> bool:
    if r.get("start_time") or r.get("end_time"):
        lo = time.fromisoformat(r.get("start_time") or "00:00")
        hi = time.fromisoformat(r.get("end_time") or "00:00")
        now = at.local.time().replace(tzinfo=None)
        if lo < hi and not lo <= now < hi:
            return False
        if lo > hi and hi <= now < lo:  # a window across midnight, e.g. 22:00-06:00
            return False
    day = at.local.date()
    if r.get("start_date") and day < date.fromisoformat(r["start_date"]):
        return False
    if r.get("end_date") and day >= date.fromisoformat(r["end_date"]):
        return False
    if r.get("day_of_week") and WEEKDAYS[day.weekday()] not in r["day_of_week"]:
        return False
    checks = (
        ("min_kwh", at.kwh, False),
        ("max_kwh", at.kwh, True),
        ("min_duration", Decimal(at.seconds), False),
        ("max_duration", Decimal(at.seconds), True),
    )
    for key, value, is_max in checks:
        limit = _d(r.get(key))
        if limit is not None and (value >= limit if is_max else value < limit):
            return False
    if at.kw is not None:
        lo_kw, hi_kw = _d(r.get("min_power")), _d(r.get("max_power"))
        if lo_kw is not None and at.kw < lo_kw:
            return False
        if hi_kw is not None and at.kw >= hi_kw:
            return False
    return True


def _local_instants(first: datetime, last: datetime, clock: time, tz: ZoneInfo) -> list[datetime]:
    """Every moment (UTC) the local wall clock shows ``clock`` between two UTC instants (twice
    in a repeated autumn hour), and every moment the clock jumps (a DST change: a time of day
    in the missing spring hour is passed there)."""
    out: list[datetime] = []
    day = first.astimezone(tz).date() - timedelta(days=1)
    while True:
        wall = datetime.combine(day, clock).replace(tzinfo=tz)
        ats = [wall.astimezone(UTC), wall.replace(fold=1).astimezone(UTC)]
        if min(ats) >= last:
            break
        out.extend(at for at in ats if first < at < last)
        day += timedelta(days=1)
    # the jumps: scan by the minute (DST changes happen on whole minutes) - slow but plain
    minute = timedelta(minutes=1)
    probe = first
    while probe < last:  # only where the offset differs somewhere in a 6-hour stretch
        end = min(probe + timedelta(hours=6), last)
        if end.astimezone(tz).utcoffset() != probe.astimezone(tz).utcoffset():
            at = probe.replace(second=0, microsecond=0)
            offset = probe.astimezone(tz).utcoffset()
            while at <= end:
                if at > probe and at.astimezone(tz).utcoffset() != offset:
                    out.append(at)
                    break
                at += minute
        probe = end
    return out


_EXACT = Decimal("0.000001")  # Wh at a cut, fixed point (pieces must add up to the interval)


def model_price(
    tariff: Mapping[str, Any], readings: Sequence[tuple[datetime, int]], tz: ZoneInfo
) -> int:
    """The price (incl. VAT, minor units) of a session's meter readings (time, Wh so far)."""
    elements = [
        el for el in tariff["elements"] if not (el.get("restrictions") or {}).get("reservation")
    ]  # reservation elements price reservations, never a charging session
    for el in elements:
        if {"min_current", "max_current"} & set(el.get("restrictions") or {}):
            raise ValueError("min/max_current: the current is not known, the tariff is refused")
    rates = {_d(c.get("vat")) or Decimal(0) for el in elements for c in el["price_components"]}
    for key in ("min_price", "max_price"):
        if len(rates) > 1 and tariff.get(key) is not None and _bound_incl(tariff[key]) is None:
            raise ValueError(f"{key} excluding VAT only under mixed VAT rates: refused")
    if not readings:
        return 0
    points = [(at.astimezone(UTC), Decimal(wh)) for at, wh in readings]
    start, wh0 = points[0]
    volume: dict[tuple[int, str], Decimal] = {}
    used: list[tuple[int, str]] = []  # (element, dimension) in the order they were used
    floor: dict[str, Decimal] = {}  # by dimension: billed when an earlier element handed over

    def add(i: int, kind: str, amount: Decimal, where: _Where) -> None:
        before = [j for j, k in used if k == kind]
        if before and before[-1] != i:  # another element takes over: has the one before used
            # its own volume up? Then never bill less than now (beyond OCPI; the engine's docs)
            r = elements[before[-1]].get("restrictions") or {}
            n = elements[i].get("restrictions") or {}
            at = {"kwh": where.kwh, "duration": Decimal(where.seconds)}
            # either limit ends the element, whatever it bills; or the next starts just here
            maxed = [(_d(r.get(f"max_{k}")), v) for k, v in at.items()]
            if any(m is not None and v >= m for m, v in maxed) or any(
                _d(n.get(f"min_{k}")) == v for k, v in at.items()
            ):
                now = _stepped(elements, volume, used, floor)
                billed_now = sum((v for (_, k), v in now.items() if k == kind), Decimal(0))
                floor[kind] = max(floor.get(kind, Decimal(0)), billed_now)
        volume[(i, kind)] = volume.get((i, kind), Decimal(0)) + amount
        used.append((i, kind))

    def first(kind: str, where: _Where) -> int | None:
        for i, el in enumerate(elements):
            kinds = {c["type"] for c in el["price_components"]}
            if kind in kinds and _holds(el.get("restrictions") or {}, where):
                return i
        return None

    flat = first("FLAT", _Where(start.astimezone(tz), Decimal(0), 0, None))
    if flat is not None:
        volume[(flat, "FLAT")] = Decimal(1)
    for (t0, e0), (t1, e1) in pairwise(points):
        if t1 <= t0:  # readings with one timestamp (a stalled clock): the energy still counts
            wh = max(Decimal(0), e1 - e0)
            elapsed = (t0 - start) // timedelta(seconds=1)
            here = _Where(t0.astimezone(tz), (e0 - wh0) / 1000, elapsed, None)
            if wh and not any(kind == "FLAT" for _, kind in volume):
                fee = first("FLAT", here)  # energy delivered under the fee's element
                if fee is not None:
                    volume[(fee, "FLAT")] = Decimal(1)
            i = first("ENERGY", here)
            if wh and i is not None:
                add(i, "ENERGY", wh, here)
            continue
        cuts = {t0, t1}
        at_threshold: dict[datetime, Decimal] = {}  # a kWh cut's energy: the threshold itself
        for el in elements:
            r = el.get("restrictions") or {}
            for key in ("min_duration", "max_duration"):
                if r.get(key) is not None:
                    cuts.add(start + timedelta(seconds=int(r[key])))
            for key in ("min_kwh", "max_kwh"):
                if r.get(key) is not None and e1 != e0:
                    target = Decimal(str(r[key])) * 1000 + wh0
                    if e0 < target < e1:
                        whole = Decimal((t1 - t0) // timedelta(microseconds=1))
                        micro = int((target - e0) * whole / (e1 - e0))
                        cuts.add(t0 + timedelta(microseconds=micro))
                        at_threshold[t0 + timedelta(microseconds=micro)] = target
            clocks = [time.fromisoformat(r[k]) for k in ("start_time", "end_time") if r.get(k)]
            if r.get("day_of_week") or r.get("start_date") or r.get("end_date"):
                clocks.append(time(0))
            for clock in clocks:
                cuts.update(_local_instants(t0, t1, clock, tz))
        edges = sorted(c for c in cuts if t0 <= c <= t1)
        span = Decimal((t1 - t0) // timedelta(microseconds=1))

        energy = {
            x: at_threshold[x]
            if t0 < x < t1 and x in at_threshold
            else (e0 + (e1 - e0) * Decimal((x - t0) // timedelta(microseconds=1)) / span).quantize(
                _EXACT
            )
            for x in edges
        }
        for a, b in pairwise(edges):
            ea, eb = energy[a], energy[b]
            seconds = Decimal((b - a) // timedelta(microseconds=1)) / 1_000_000
            wh = max(Decimal(0), eb - ea)
            kw = (wh / 1000) / (seconds / 3600) if seconds else None
            where = _Where(
                a.astimezone(tz), (ea - wh0) / 1000, (a - start) // timedelta(seconds=1), kw
            )
            if not any(kind == "FLAT" for _, kind in volume):
                i = first("FLAT", where)  # a fee whose restriction becomes true on the way
                if i is not None:
                    volume[(i, "FLAT")] = Decimal(1)
            for kind, amount in (("ENERGY", wh), ("TIME" if wh > 0 else "PARKING_TIME", seconds)):
                if amount:
                    i = first(kind, where)
                    if i is not None:
                        add(i, kind, amount, where)
    return _price_of(tariff, elements, _stepped(elements, volume, used, floor))


def _stepped(
    elements: Sequence[Mapping[str, Any]],
    volume: Mapping[tuple[int, str], Decimal],
    used: Sequence[tuple[int, str]],
    floor: Mapping[str, Decimal],
) -> dict[tuple[int, str], Decimal]:
    """What is billed of each volume. step_size: once per dimension, by the element used last,
    over the session's total; the charging time billed beyond the charged time covers parking
    time (OCPI's examples). Beyond OCPI: never less than was billed when an element whose own
    volume (max_kwh, max_duration) was used up handed the dimension over, or the next element
    started there at its own min_kwh/min_duration (``floor``)."""
    billed = dict(volume)
    spare = Decimal(0)
    for kind in ("ENERGY", "TIME", "PARKING_TIME"):
        lasts = [i for i, k in used if k == kind]
        if not lasts:
            continue
        i = lasts[-1]
        comp = next(c for c in elements[i]["price_components"] if c["type"] == kind)
        step = Decimal(int(comp.get("step_size") or 1))
        total = sum(v for (_, k), v in volume.items() if k == kind)
        due = total if kind != "PARKING_TIME" else max(Decimal(0), total - spare)
        up = (due / step).to_integral_value(ROUND_CEILING) * step
        least = max(up, floor.get(kind, Decimal(0)))
        billed[(i, kind)] = max(Decimal(0), least - (total - volume[(i, kind)]))
        parked = [j for j, k in used if k == "PARKING_TIME"]
        if kind == "TIME" and parked and parked[-1] == i:  # same element: parking is covered
            spare = up - total
    return billed


def _price_of(
    tariff: Mapping[str, Any],
    elements: Sequence[Mapping[str, Any]],
    billed: Mapping[tuple[int, str], Decimal],
) -> int:
    """The billed volumes at the components' prices, bounded by min/max_price, in minor units."""
    excl = incl = Decimal(0)
    for (i, kind), amount in billed.items():
        comp = next(c for c in elements[i]["price_components"] if c["type"] == kind)
        per = {"ENERGY": Decimal(1000), "FLAT": Decimal(1)}.get(kind, Decimal(3600))
        cost = amount * Decimal(str(comp["price"])) / per
        rate = 1 + (_d(comp.get("vat")) or Decimal(0)) / 100
        if tariff.get("tax_included") == "YES":  # OCPI 2.3.0: the price includes its VAT
            excl, incl = excl + cost / rate, incl + cost
        else:
            excl, incl = excl + cost, incl + cost * rate
    lo, hi = _bound(tariff.get("min_price")), _bound(tariff.get("max_price"))
    bounded = excl
    if lo is not None and excl < lo:
        bounded = lo
    if hi is not None and excl > hi:
        bounded = hi
    if bounded != excl and excl:
        incl = incl * bounded / excl
    elif bounded != excl:  # a session that cost nothing: the one VAT rate of the tariff, if any
        vats = {_d(c.get("vat")) for el in elements for c in el["price_components"]}
        only = next(iter(vats)) if len(vats) == 1 else None
        incl = bounded * (1 + (only or Decimal(0)) / 100)
    lo_incl, hi_incl = _bound_incl(tariff.get("min_price")), _bound_incl(tariff.get("max_price"))
    if hi_incl is not None and incl > hi_incl:
        incl = hi_incl
    if lo_incl is not None and incl < lo_incl:
        incl = lo_incl
    places = currency_info(str(tariff["currency"])).exponent
    return int((incl * Decimal(10) ** places).to_integral_value(ROUND_HALF_UP))


# ---- the money of a finished session -----------------------------------------------------------


@dataclass(frozen=True)
class TerminalHold:
    """One hold as the terminal's own books show it (the truth the model starts from)."""

    receipt: str  # the terminal's reference of the hold
    approved: int
    state: str  # "booked", "released", "lapsed", "open"
    booked: int = 0


@dataclass(frozen=True)
class Scenario:
    tariff: Mapping[str, Any]
    tz: ZoneInfo
    readings: Sequence[tuple[datetime, int]]  # (time, Wh since the charge started)
    holds: Sequence[TerminalHold]  # in the order they were approved
    had_reference: bool = True  # the payment has an OCPI authorization reference
    refunded: int = 0  # refunds done (06 31), minor units
    # Energy the charger reported after the bill was made (a late stop report or CDR), Wh; with
    # no billed readings, when the charge began as far as the session knows.
    late_wh: int = 0
    late_from: datetime | None = None
    late_told_apart: bool = False  # reported after the outcome went up: a FAC of its own


@dataclass(frozen=True)
class Expected:
    price: int
    capture_by_hold: Mapping[str, int]  # what each hold must be captured with (filled in order)
    captured: int  # what the terminal booked
    released: int
    owed: int
    refunded: int
    fac: tuple[str, int] | None  # (status, amount) the CPO must be told, or nothing
    late_owed: int = 0  # the price of the energy reported late (part of owed)
    late_fac: tuple[str, int] | None = None  # its own FAC, when told apart
    notes: tuple[str, ...] = field(default=())


def expect(s: Scenario) -> Expected:
    energy = s.readings[-1][1] - s.readings[0][1] if s.readings else 0
    price = model_price(s.tariff, s.readings, s.tz) if energy > 0 else 0
    left, plan = price, {}
    for h in s.holds:
        take = min(left, h.approved)
        plan[h.receipt] = take
        left -= take
    captured = sum(h.booked for h in s.holds if h.state == "booked")
    released = sum(h.approved - h.booked for h in s.holds if h.state in ("booked", "released"))
    late = _late_price(s, price)
    owed = max(0, price - captured)
    told = owed + (0 if s.late_told_apart else late)
    fac: tuple[str, int] | None = None
    if s.had_reference and (captured or told):
        if captured and not told:
            fac = ("SUCCESS", captured)
        elif captured:
            fac = ("PARTIAL_SUCCESS", captured)
        else:
            fac = ("FAILED", told)
    late_fac = ("FAILED", late) if s.had_reference and late and s.late_told_apart else None
    return Expected(price, plan, captured, released, owed + late, s.refunded, fac, late, late_fac)


def _late_price(s: Scenario, price: int) -> int:
    """Energy reported after the bill was made is owed, never dropped (issue 26, item 12): the
    price of the billed readings with that energy added at the last of them (or at the start
    of a charge that billed nothing), less what was billed. No time is billed for a gap in
    which nobody saw the charge, so the energy is priced at one instant."""
    if s.late_wh <= 0:
        return 0
    if s.readings:
        at, wh = s.readings[-1]
        full = [*s.readings, (at, wh + s.late_wh)]
    else:
        assert s.late_from is not None  # the scenario says when the charge began
        full = [(s.late_from, 0), (s.late_from, s.late_wh)]
    return max(0, model_price(s.tariff, full, s.tz) - price)
