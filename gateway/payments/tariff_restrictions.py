"""A tariff element's restrictions: whether they hold at a moment of a session, and where one
interval between two meter samples is cut for pricing: at every instant a restriction may start
or stop holding (a duration or an energy reached, a time
of day, local midnight for a weekday or a date, a DST jump of the wall clock). Pure.

Rules (the why of each is at its function): a time of day is a cut each time the wall clock
shows it (twice in the autumn's repeated hour); the instant the UTC offset changes is a cut too
(a window opening in the spring's missing hour opens when the clock passes it); the energy at a
cut is kept to a micro-Wh, fixed point, so the pieces add up to the interval exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

_KWH = Decimal(1000)
_MICRO_WH = Decimal("0.000001")  # the energy at a cut, fixed point: pieces add up exactly
DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


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
        if self.day_of_week and DAYS[local.weekday()] not in self.day_of_week:
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


def microseconds(span: timedelta) -> int:
    """A duration as an exact integer (timedelta.total_seconds() is a float)."""
    return span // timedelta(microseconds=1)


Point = tuple[datetime, Decimal]  # (time, Wh since the start of the session)


def pieces(
    restrictions: Sequence[Restrictions], start: datetime, before: Point, after: Point, tz: ZoneInfo
) -> list[tuple[Point, Point]]:
    """Cut one interval where any element's restriction boundary falls inside it."""
    (t0, e0), (t1, e1) = before, after
    span = microseconds(t1 - t0)
    if span <= 0:
        return [(before, after)]
    cuts: set[datetime] = set()
    # A kWh threshold's cut is at a whole microsecond (floored), where the interpolated energy
    # falls just short of the threshold; the energy there is the threshold itself, or the piece
    # after the cut would start "below" it and go to the wrong element for the whole rest.
    exact: dict[datetime, Decimal] = {}
    for r in restrictions:
        for seconds in (r.min_duration, r.max_duration):
            if seconds is not None:
                cuts.add(start + timedelta(seconds=seconds))
        for kwh in (r.min_kwh, r.max_kwh):
            if kwh is not None and e0 < kwh * _KWH < e1:
                at = t0 + timedelta(microseconds=int((kwh * _KWH - e0) * span / (e1 - e0)))
                cuts.add(at)
                exact[at] = kwh * _KWH
        clocks = [c for c in (r.start_time, r.end_time) if c is not None]
        if r.day_of_week or r.start_date is not None or r.end_date is not None:
            clocks.append(time(0))  # a weekday or a date changes at local midnight
        for clock in clocks:
            cuts.update(_wall_clock(t0, t1, clock, tz))
        if clocks:
            cuts.update(_offset_changes(t0, t1, tz))
    inside = sorted(cut for cut in cuts if t0 < cut < t1)
    points = [before]
    for cut in inside:
        fraction = Decimal(microseconds(cut - t0)) / Decimal(span)
        energy = exact.get(cut, (e0 + (e1 - e0) * fraction).quantize(_MICRO_WH))
        points.append((cut, max(energy, points[-1][1])))  # never below the previous cut's
    points.append(after)
    return list(pairwise(points))


def _wall_clock(t0: datetime, t1: datetime, clock: time, tz: ZoneInfo) -> set[datetime]:
    """Every instant in [t0, t1) the local wall clock shows ``clock``: twice in the autumn's
    repeated hour (fold 0 and 1). A time in the spring's missing hour gives instants off by the
    gap; harmless, as the jump itself is a cut (``_offset_changes``)."""
    found: set[datetime] = set()
    day = t0.astimezone(tz).date() - timedelta(days=1)
    while True:
        at = datetime.combine(day, clock, tz)
        both = {at.astimezone(UTC), at.replace(fold=1).astimezone(UTC)}
        if min(both) >= t1:
            return found
        found.update(both)
        day += timedelta(days=1)


_OFFSET_PROBE = timedelta(hours=6)  # at most one UTC offset change in any six hours


def _offset_changes(t0: datetime, t1: datetime, tz: ZoneInfo) -> set[datetime]:
    """The instants in (t0, t1) where the local UTC offset changes (a DST jump): the wall clock
    jumps there, so a time-of-day restriction may start or stop holding without its time being
    shown by the clock. Found to the microsecond by bisection (rare: one per DST night)."""
    found: set[datetime] = set()
    a = t0
    while a < t1:
        b = min(a + _OFFSET_PROBE, t1)
        if a.astimezone(tz).utcoffset() != b.astimezone(tz).utcoffset():
            lo, hi = a, b
            while hi - lo > timedelta(microseconds=1):
                mid = lo + (hi - lo) // 2
                same = mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset()
                lo, hi = (mid, hi) if same else (lo, mid)
            found.add(hi)
        a = b
    return found


def inactive_wh(
    restrictions: Sequence[Restrictions], points: Sequence[Point], tz: ZoneInfo
) -> Decimal:
    """The energy delivered while no element's restrictions held (``points``: the session's
    meter samples as (time, Wh so far)). OCPI prices nothing there, so that energy is free; the
    caller makes it visible (a tariff whose every element is restricted, a night tariff at
    noon, would otherwise give energy away without a word)."""
    if not points:
        return Decimal(0)
    start, e_start = points[0]
    free = Decimal(0)
    for before, after in pairwise(points):
        relative = [(t.astimezone(UTC), e - e_start) for t, e in (before, after)]
        for (t0, e0), (t1, e1) in pieces(restrictions, start, relative[0], relative[1], tz):
            wh = max(Decimal(0), e1 - e0)
            seconds = Decimal(microseconds(t1 - t0)) / 1_000_000 if t1 > t0 else Decimal(0)
            power = (wh / _KWH) / (seconds / 3600) if seconds else None
            at = (t0.astimezone(tz), e0 / _KWH, (t0 - start) // timedelta(seconds=1), power)
            if wh and not any(r.allow(*at) for r in restrictions):
                free += wh
    return free
