"""``step_size_hazards`` (gateway/payments/tariff_lint.py): a coarser step_size that a change of
power or of the clock can drop is flagged, naming the tariff, the dimension and both elements;
a handover by volume (kept billed by tariff.py) and equal or finer steps are not."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.payments.tariff import Dimension
from gateway.payments.tariff_lint import StepSizeHazard, step_size_hazards
from gateway.payments.tariff_ocpi import tariff_from_ocpi


def _el(dim: str, step: int, **r: Any) -> dict[str, Any]:
    el: dict[str, Any] = {"price_components": [{"type": dim, "price": "1.00", "step_size": step}]}
    if r:
        el["restrictions"] = r
    return el


def _hazards(*elements: dict[str, Any]) -> tuple[StepSizeHazard, ...]:
    return step_size_hazards(tariff_from_ocpi({"id": "X", "currency": "EUR", "elements": elements}))


@pytest.mark.parametrize(
    "restriction",
    [
        {"max_power": 2},
        {"min_power": 11},
        {"start_time": "10:00"},
        {"end_time": "17:00"},
        {"day_of_week": ["MONDAY"]},
        {"start_date": "2026-01-01"},
        {"end_date": "2027-01-01"},
    ],
)
def test_an_element_ended_by_power_or_the_clock_with_a_coarser_step_is_flagged(
    restriction: dict[str, Any],
) -> None:
    [hazard] = _hazards(_el("ENERGY", 5000, **restriction), _el("ENERGY", 1))
    assert hazard == StepSizeHazard("X", Dimension.ENERGY, 0, 5000, 1, 1)
    assert "tariff X: element 0" in hazard.text() and "element 1" in hazard.text()


def test_an_earlier_element_starting_by_the_clock_over_a_coarser_one_is_flagged() -> None:
    """Element 0 (by the Wh, from 10:00) takes over from element 1 (5 kWh blocks) when the
    clock reaches 10:00: element 1 is the coarse one, element 0 follows it."""
    [hazard] = _hazards(_el("ENERGY", 1, start_time="10:00"), _el("ENERGY", 5000))
    assert (hazard.coarse, hazard.fine) == (1, 0)


def test_a_fine_element_for_slow_charging_over_a_coarse_fallback_is_flagged() -> None:
    """Fast first (the fallback, 5 kWh blocks), then slow (element 0 by the Wh): the power
    drop makes element 0 the last used, and the block is gone."""
    [hazard] = _hazards(_el("ENERGY", 1, max_power=2), _el("ENERGY", 5000))
    assert (hazard.coarse, hazard.fine) == (1, 0)


@pytest.mark.parametrize(
    "elements",
    [
        # a handover by volume keeps the block billed (tariff.py _floor_at_switch)
        (_el("ENERGY", 5000, max_kwh=1), _el("ENERGY", 1)),
        (_el("ENERGY", 5000, max_duration=1800), _el("ENERGY", 1)),
        (_el("ENERGY", 1, min_kwh=1), _el("ENERGY", 5000)),
        # equal or finer steps lose nothing
        (_el("ENERGY", 1000, max_power=2), _el("ENERGY", 1000)),
        (_el("ENERGY", 1, max_power=2), _el("ENERGY", 1)),
        # the fallback is never left for the restricted element after it
        (_el("ENERGY", 5000), _el("ENERGY", 1, max_power=2)),
        # another dimension: the next element keeps the old rounding (OCPI)
        (_el("TIME", 1800, end_time="17:00"), _el("ENERGY", 1)),
    ],
)
def test_what_is_not_flagged(elements: tuple[dict[str, Any], ...]) -> None:
    assert _hazards(*elements) == ()


def test_ocpis_own_step_size_example_is_flagged_per_dimension() -> None:
    """OCPI's step_size example (30-minute steps before 17:00, 15 after) is exactly such a
    tariff: TIME flagged, and only TIME."""
    before = {
        "price_components": [
            {"type": "TIME", "price": "1.20", "step_size": 1800},
            {"type": "PARKING_TIME", "price": "1.00", "step_size": 900},
        ],
        "restrictions": {"end_time": "17:00"},
    }
    after = _el("TIME", 900)
    assert [(h.dimension, h.coarse, h.fine) for h in _hazards(before, after)] == [
        (Dimension.TIME, 0, 1)
    ]
