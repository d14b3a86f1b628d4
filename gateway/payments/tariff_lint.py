"""Which tariffs this site prices as OCPI says but warns about: a coarse ``step_size`` that a
change of power or of the clock can make vanish (``step_size_hazards``).

OCPI 2.2.1/2.3.0 (mod_tariffs, PriceComponent class, the note on ``step_size`` and its examples
"switching to different Tariff Element"): only the last element used for a dimension rounds,
and it rounds the session's whole volume of that dimension. When an element in 5 kWh blocks is
left for one billed by the Wh because the car charged faster (``max_power``) or the clock moved
on (a time of day, a weekday, a date), the block is gone: 0.9 kWh in an hour under 2 kW costs
5 kWh, 2.5 kWh in the same hour 2.5 kWh. More energy for less money, but it is the spec's rule
and the CPO prices its CDR the same way, so the engine keeps it (tariff.py ``_rounded``; a tier
ended by its own ``max_kwh``/``max_duration`` keeps its block, ``_floor_at_switch``). What this
module decides is only whether a tariff can do that, so that ``config validate`` and a pull from
the CPO say so to the operator, naming the tariff and its elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

from gateway.payments.tariff import Dimension, Restrictions, Tariff

_ROUNDED = (Dimension.ENERGY, Dimension.TIME, Dimension.PARKING_TIME)  # FLAT has no step_size


@dataclass(frozen=True, slots=True)
class StepSizeHazard:
    """Element ``coarse`` (its ``coarse_step``) may hand ``dimension`` over to element ``fine``
    (its smaller ``fine_step``) by power or by the clock: its block is then not billed.
    Element numbers count the charging elements (reservation elements left out), as
    tariff_ocpi.py's refusals do."""

    tariff_id: str
    dimension: Dimension
    coarse: int
    coarse_step: int
    fine: int
    fine_step: int

    def text(self) -> str:
        return (
            f"tariff {self.tariff_id}: element {self.coarse} bills {self.dimension} in steps of "
            f"{self.coarse_step} and can hand it over by power or by the clock to element "
            f"{self.fine} (steps of {self.fine_step}); OCPI rounds by the last element used, so "
            "a session that ends there is not billed the coarser block and can cost less for "
            "more (priced as OCPI says, as the CPO's CDR)"
        )


def switches_by_power_or_clock(r: Restrictions) -> bool:
    """An element with such a restriction can start or stop applying whatever the volume."""
    return bool(
        r.min_power is not None
        or r.max_power is not None
        or r.start_time is not None
        or r.end_time is not None
        or r.start_date is not None
        or r.end_date is not None
        or r.day_of_week
    )


def step_size_hazards(tariff: Tariff) -> tuple[StepSizeHazard, ...]:
    """Every pair of elements where a coarser ``step_size`` of a dimension may be followed, by
    power or by the clock, by a finer one.

    Elements apply first-match in list order, so element ``j`` follows element ``i`` either
    because ``i`` stops applying (``j`` later in the list: ``i``'s own restrictions decide) or
    because ``j`` starts applying (``j`` earlier: ``j``'s restrictions decide). A handover by
    volume (``max_kwh``/``max_duration``, ``min_kwh``/``min_duration``) keeps the block billed
    (tariff.py ``_floor_at_switch``) and is not flagged. Pairwise, so it errs towards warning:
    a handover that needs a third element in between is flagged too."""
    found: list[StepSizeHazard] = []
    elements = tariff.elements
    for i, j in permutations(range(len(elements)), 2):
        trigger = elements[i] if i < j else elements[j]
        if not switches_by_power_or_clock(trigger.restrictions):
            continue
        for dim in _ROUNDED:
            a, b = elements[i].component(dim), elements[j].component(dim)
            if a is None or b is None:
                continue  # a dimension the next element lacks keeps the old rounding (OCPI)
            if (a.step_size or 1) > (b.step_size or 1):
                found.append(StepSizeHazard(tariff.id, dim, i, a.step_size, j, b.step_size))
    return tuple(found)
