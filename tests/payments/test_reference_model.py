"""The reference model (reference_model.py) on cases computed by hand, so that it is a second
opinion and not a copy of the engine's: weekday and date restrictions cut at local midnight,
elapsed hours across both DST nights, the fill of several holds, and the FAC it expects."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from tests.payments.reference_model import Scenario, TerminalHold, expect, model_price

BERLIN = ZoneInfo("Europe/Berlin")


def _energy(price: str, **restrictions: object) -> dict[str, object]:
    element: dict[str, object] = {"price_components": [{"type": "ENERGY", "price": price}]}
    if restrictions:
        element["restrictions"] = restrictions
    return element


def test_weekday_changes_at_local_midnight() -> None:
    tariff = {
        "currency": "EUR",
        "elements": [_energy("1.00", day_of_week=["SATURDAY"]), _energy("0.50")],
    }
    # Friday 23:00 to Saturday 01:00 Berlin (22:00 to 00:00 UTC), 10 kWh an hour
    readings = [
        (datetime(2026, 1, 9, 22, tzinfo=UTC), 0),
        (datetime(2026, 1, 10, tzinfo=UTC), 20_000),
    ]
    assert model_price(tariff, readings, BERLIN) == 500 + 1000


def test_elapsed_hours_across_both_dst_nights() -> None:
    time = {"currency": "EUR", "elements": [{"price_components": [{"type": "TIME", "price": "1"}]}]}
    spring = [(datetime(2026, 3, 29, 0, tzinfo=UTC), 0), (datetime(2026, 3, 29, 2, tzinfo=UTC), 1)]
    autumn = [
        (datetime(2026, 10, 24, 22, tzinfo=UTC), 0),
        (datetime(2026, 10, 25, 3, tzinfo=UTC), 1),
    ]
    assert model_price(time, spring, BERLIN) == 200  # 01:00 CET to 04:00 CEST: 2 h
    assert model_price(time, autumn, BERLIN) == 500  # 00:00 CEST to 04:00 CET: 5 h


def test_holds_fill_in_order_and_the_fac_follows_the_terminals_books() -> None:
    tariff = {"currency": "EUR", "elements": [_energy("0.50")]}
    readings = [
        (datetime(2026, 1, 5, 8, tzinfo=UTC), 0),
        (datetime(2026, 1, 5, 9, tzinfo=UTC), 50_000),
    ]
    two = (TerminalHold("1", 1500, "booked", 1500), TerminalHold("2", 1500, "booked", 1000))
    got = expect(Scenario(tariff, BERLIN, readings, two))
    assert (got.price, dict(got.capture_by_hold), got.captured, got.released, got.owed) == (
        2500,
        {"1": 1500, "2": 1000},
        2500,
        500,
        0,
    )
    assert got.fac == ("SUCCESS", 2500)
    lapsed = (TerminalHold("1", 1500, "booked", 1500), TerminalHold("2", 1500, "lapsed"))
    assert expect(Scenario(tariff, BERLIN, readings, lapsed)).fac == ("PARTIAL_SUCCESS", 1500)
    nothing = (TerminalHold("1", 1500, "lapsed"),)
    assert expect(Scenario(tariff, BERLIN, readings, nothing)).fac == ("FAILED", 2500)
    released = (TerminalHold("1", 1500, "released"),)
    assert expect(Scenario(tariff, BERLIN, [], released)).fac is None


def test_energy_reported_late_is_owed_at_one_instant_and_told_where_it_arrived() -> None:
    """Item 12: energy reported after the bill is owed at the tariff of the last billed reading
    (no time for the gap nobody saw); in the session's own FAC while it settled, else its own."""
    tariff = {
        "currency": "EUR",
        "elements": [
            {
                "price_components": [
                    {"type": "TIME", "price": "1.00"},
                    {"type": "ENERGY", "price": "0.50"},
                ]
            }
        ],
    }
    readings = [
        (datetime(2026, 1, 5, 8, tzinfo=UTC), 0),
        (datetime(2026, 1, 5, 9, tzinfo=UTC), 10_000),
    ]
    hold = (TerminalHold("1", 9000, "booked", 600),)  # 1 h + 10 kWh = 6.00
    got = expect(Scenario(tariff, BERLIN, readings, hold, late_wh=2_000))
    assert (got.price, got.late_owed, got.owed) == (600, 100, 100)  # 2 kWh, no hour added
    assert got.fac == ("PARTIAL_SUCCESS", 600) and got.late_fac is None
    apart = expect(Scenario(tariff, BERLIN, readings, hold, late_wh=2_000, late_told_apart=True))
    assert apart.fac == ("SUCCESS", 600) and apart.late_fac == ("FAILED", 100)
    start = readings[0][0]  # a charge that billed nothing: at its start, energy only
    none = expect(Scenario(tariff, BERLIN, [], (), late_wh=2_000, late_from=start))
    assert (none.owed, none.fac) == (100, ("FAILED", 100))
