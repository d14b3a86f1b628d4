"""Tariff pricing and hold strategies (pure functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.payments.preauth import HoldPolicy, Target, initial_hold, topup
from gateway.payments.tariff import (
    Dimension,
    PriceComponent,
    Pricer,
    Restrictions,
    Sample,
    Tariff,
    TariffElement,
    UnpriceableTariff,
    price,
)
from gateway.payments.tariff_ocpi import tariff_from_ocpi
from tests.payments.fixtures import TARIFF, TZ

DATA = (
    Path(__file__).resolve().parent.parent / "data" / "ocpi"
)  # copied from the OCPI spec, see SOURCE.md
UTC_TZ = ZoneInfo("UTC")


def samples(
    *points: tuple[int, int], start: datetime = datetime(2026, 1, 5, 9, tzinfo=UTC)
) -> list[Sample]:
    """(minutes from start, cumulative Wh)."""
    return [Sample(start + timedelta(minutes=m), wh) for m, wh in points]


def ocpi(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


# The spec's complex example restricts by min/max_current, which no meter value here carries:
# refused (never priced as if the restriction were absent).
UNPRICEABLE = {"tariff_4_complex.json"}


def test_every_spec_tariff_example_parses() -> None:
    for path in sorted(DATA.glob("tariff_*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        if path.name in UNPRICEABLE:
            with pytest.raises(UnpriceableTariff, match="current"):
                tariff_from_ocpi(raw)
            continue
        tariff = tariff_from_ocpi(raw)
        assert tariff.elements, path.name


def test_energy_with_vat_is_rounded_once() -> None:
    t = tariff_from_ocpi(ocpi("tariff_8_simple_025kwh.json"))  # 0.25/kWh, 10 % VAT
    p = price(t, samples((0, 0), (60, 12_345)), UTC_TZ)
    assert p.excl_vat == Decimal("3.08625") and p.minor == 339  # 3.394875 -> 3.39


def test_step_size_rounds_volume_up_per_component() -> None:
    """40 min charging bill 60 (30-min steps); the 20 extra minutes cover 20 of the 35 minutes
    parked under the same element (the spec's step_size example 1): 15 min parking billed."""
    t = tariff_from_ocpi(
        ocpi("tariff_14_step_size.json")
    )  # TIME 1.20/h in 30-min steps, parking 15-min steps
    p = price(t, samples((0, 0), (40, 20_000), (75, 20_000)), UTC_TZ)
    assert p.lines == (
        ("PARKING_TIME", Decimal(900), Decimal("0.250")),
        ("TIME", Decimal(3600), Decimal("1.2")),
    )
    assert p.minor == 145


def test_max_price_caps_the_total() -> None:
    t = tariff_from_ocpi(ocpi("tariff_6_025kwh_start_max_price.json"))
    assert t.max_price is not None
    p = price(t, samples((0, 0), (600, 200_000)), UTC_TZ)
    assert p.excl_vat == t.max_price


def test_min_price_applies_to_short_sessions() -> None:
    t = tariff_from_ocpi(ocpi("tariff_12_025kwh_min_price.json"))
    assert t.min_price is not None
    p = price(t, samples((0, 0), (5, 100)), UTC_TZ)
    assert p.excl_vat == t.min_price


def test_time_of_day_restriction_switches_the_energy_price_at_22h() -> None:
    start = datetime(2026, 1, 5, 20, 30, tzinfo=UTC)  # 21:30 in Berlin
    p = price(TARIFF, samples((0, 0), (30, 5_000), (60, 10_000), start=start), TZ)
    # 1.00 flat + 5 kWh at 0.45 (before 22:00 local) + 5 kWh at 0.35 (after), all +19 %
    assert p.minor == int(
        (Decimal("1.00") + 5 * Decimal("0.45") + 5 * Decimal("0.35")) * Decimal(119)
    )


def test_parking_after_four_hours_is_charged() -> None:
    p = price(TARIFF, samples((0, 0), (120, 10_000), (300, 10_000)), TZ)
    parking = [line for line in p.lines if line[0] == "PARKING_TIME"]
    assert parking and parking[0][1] == Decimal(3600)  # only the hour after 4 h of session
    assert p.incl_vat == Decimal("13.685") and p.minor == 1369  # half up, once


def test_no_samples_no_price() -> None:
    assert price(TARIFF, [], TZ).minor == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "x"},
        {
            "id": "x",
            "currency": "EUR",
            "elements": [{"price_components": [{"type": "NOPE", "price": 1}]}],
        },
    ],
)
def test_bad_tariffs_are_refused_naming_the_tariff(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="tariff x"):
        tariff_from_ocpi(bad)


HOLD = HoldPolicy(
    "fixed", {"EUR": 5000}, 500, 15000, incremental_initial_minor=1500, incremental_step_minor=1500
)
NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)


def test_fixed_hold_is_per_currency_and_clamped() -> None:
    assert initial_hold(HOLD, "EUR", TARIFF, None, NOW, TZ) == 5000
    assert (
        initial_hold(HoldPolicy("fixed", {"EUR": 90_000}, 500, 15000), "EUR", None, None, NOW, TZ)
        == 15000
    )


def test_target_hold_prices_the_declared_energy_plus_margin() -> None:
    policy = HoldPolicy("target", {"EUR": 5000}, 500, 15000, target_margin_pct=Decimal(10))
    hold = initial_hold(policy, "EUR", TARIFF, Target(kwh=Decimal(20)), NOW, TZ)
    expected = (Decimal("1.00") + 20 * Decimal("0.45")) * Decimal("1.19") * Decimal("1.10")
    assert (
        expected == Decimal("13.09") and hold == 1309
    )  # rounded up, never below the target's price
    assert initial_hold(policy, "EUR", TARIFF, Target(amount_minor=2000), NOW, TZ) == 2200
    assert initial_hold(policy, "EUR", TARIFF, Target(amount_minor=100), NOW, TZ) == 500  # clamped


def test_incremental_starts_small_and_tops_up_near_the_hold() -> None:
    policy = HoldPolicy(
        "incremental",
        {"EUR": 5000},
        500,
        4000,
        incremental_initial_minor=1500,
        incremental_step_minor=1500,
    )
    assert initial_hold(policy, "EUR", TARIFF, None, NOW, TZ) == 1500
    assert topup(policy, 1500, 1000) is None  # below 80 %
    assert topup(policy, 1500, 1200) == 1500
    assert topup(policy, 3500, 3400) == 500  # never beyond hold_max
    assert topup(policy, 4000, 3900) is None
    assert topup(HOLD, 5000, 4900) is None  # fixed never tops up


def test_fixed_hold_follows_the_tariffs_preauthorize_amount() -> None:
    tariff = tariff_from_ocpi(
        {
            "id": "P",
            "currency": "EUR",
            "preauthorize_amount": 35.5,
            "elements": [{"price_components": [{"type": "ENERGY", "price": 0.5}]}],
        }
    )
    assert initial_hold(HOLD, "EUR", tariff, None, NOW, TZ) == 3550
    assert (
        initial_hold(HOLD, "GBP", tariff, None, NOW, TZ) == 15000
    )  # another currency: not this tariff's amount


SPEC_TARIFFS = [
    tariff_from_ocpi(ocpi(p.name))
    for p in sorted(DATA.glob("tariff_*.json"))
    if p.name not in UNPRICEABLE
]
BY_VOLUME = Tariff(  # restrictions on energy and duration, which the spec's examples lack
    "V1",
    "EUR",
    (
        TariffElement(
            (PriceComponent(Dimension.ENERGY, Decimal("0.30"), Decimal(19), 1),),
            Restrictions(max_kwh=Decimal(10)),
        ),
        TariffElement((PriceComponent(Dimension.ENERGY, Decimal("0.50"), Decimal(19), 1),)),
        TariffElement(
            (PriceComponent(Dimension.TIME, Decimal("2.00"), Decimal(19), 60),),
            Restrictions(max_duration=1800),
        ),
        TariffElement(
            (PriceComponent(Dimension.PARKING_TIME, Decimal("6.00"), Decimal(19), 60),),
            Restrictions(min_duration=2 * 3600),
        ),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([*SPEC_TARIFFS, TARIFF, BY_VOLUME]),
    st.lists(
        st.tuples(st.integers(1, 7200), st.just(0) | st.integers(0, 30_000)),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 23),
)
def test_incremental_pricing_equals_pricing_from_scratch(
    tariff: Tariff, steps: list[tuple[int, int]], hour: int
) -> None:
    """The engine prices each meter value by adding one interval to the last price's volumes
    (``Pricer``); after every sample that must be the price computed from all the samples."""
    pricer = Pricer()
    at, energy = datetime(2026, 1, 5, hour, 50, tzinfo=UTC), 0
    seen: list[Sample] = []
    for seconds, wh in steps:
        seen.append(Sample(at, energy))
        assert pricer.price(tariff, seen, TZ) == price(tariff, seen, TZ)
        at, energy = at + timedelta(seconds=seconds), energy + wh
    assert pricer.price(tariff, seen[:1], TZ) == price(
        tariff, seen[:1], TZ
    )  # an older sequence: no mix-up


def test_a_repeated_last_reading_changes_no_price() -> None:
    """A charger that sends its last meter value twice (same instant, same energy) adds no
    interval: the zero-length point at 0.5 kWh once started the fee's ``min_kwh`` element
    (found by the reference-model property test, hypothesis seed 125)."""
    fee = {
        "id": "F",
        "currency": "EUR",
        "elements": [
            {
                "price_components": [{"type": "FLAT", "price": "0.25", "step_size": 0}],
                "restrictions": {"min_kwh": 0.5},
            }
        ],
    }
    tariff = tariff_from_ocpi(fee)
    once = samples((0, 0), (60, 500))
    twice = [*once, once[-1]]
    assert price(tariff, twice, TZ).minor == price(tariff, once, TZ).minor == 0
    assert Pricer().price(tariff, twice, TZ).minor == 0
