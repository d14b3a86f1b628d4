"""The meter plausibility rule (issue 27), pure, and as the session engine applies it: an
implausible reading is a recorded discrepancy, never a bill or a void; the meter's verified
signed record stays the billing truth."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.fiscal.meter import SignedMeter
from gateway.payments import events as e
from gateway.payments.plausibility import implausible
from gateway.payments.session import Session, State
from tests.payments import fixtures
from tests.payments.fixtures import policy
from tests.payments.test_session import SID, charging

RATED = policy(rated_power_w={"E1": 22_000})  # a 22 kW EVSE


def at(s: Session, ev: e.Event, minutes: float) -> Session:
    return fixtures.at(s, ev, minutes, RATED)


@pytest.mark.parametrize(
    ("energy", "last", "seconds", "rated", "why"),
    [
        (5_000, 4_000, 3600, 22_000, None),
        (22_050, 0, 3600, 22_000, None),  # exactly the rated power (and the slack)
        (22_051, 0, 3600, 22_000, "faster than the EVSE's rated 22000 W"),
        (10**12, 0, 3600, None, None),  # no rating configured: not checked for speed
        (3_000, 4_000, 3600, 22_000, "goes backwards"),
        (-1, 0, 3600, None, "below the start reading"),
    ],
)
def test_the_rule(energy: int, last: int, seconds: int, rated: int | None, why: str | None) -> None:
    found = implausible(
        energy_wh=energy,
        last_energy_wh=last,
        elapsed=timedelta(seconds=seconds),
        rated_power_w=rated,
    )
    assert (found is None) if why is None else (found is not None and why in found)


def test_a_giant_meter_value_is_recorded_and_never_priced() -> None:
    s = at(charging(), e.MeterValue(SID, "m1", 1000 + 3000), 10)  # 3 kWh in 10 min: 18 kW
    price = s.bill.price_minor
    giant = at(s, e.MeterValue(SID, "m2", 1000 + 10**9), 11)
    assert giant.bill.price_minor == price and giant.metering.readings == s.metering.readings
    assert giant.state is State.CHARGING and "rated 22000 W" in giant.discrepancies[-1]


def test_a_stop_below_the_last_reading_is_recorded_and_the_charge_goes_on() -> None:
    s = at(charging(), e.MeterValue(SID, "m1", 1000 + 6000), 20)
    forged = at(
        s,
        e.ChargerStopped(
            session_id=SID, event_id="stopped:forged", meter_wh=1000, session_energy_wh=0
        ),
        21,
    )
    assert forged.state is State.CHARGING and forged.metering.readings == s.metering.readings
    assert "a stop below the last reading" in forged.discrepancies[-1]
    true = at(
        forged, e.ChargerStopped(session_id=SID, event_id="stopped:true", meter_wh=1000 + 7000), 25
    )
    assert true.metering.billed_energy_wh == 7000 and true.state is not State.CHARGING


def test_a_backwards_meter_value_is_a_discrepancy() -> None:
    s = at(charging(), e.MeterValue(SID, "m1", 1000 + 3000), 10)
    older = at(s, e.MeterValue(SID, "m0", 1000 + 2000), 11)
    assert (
        older.metering.readings == s.metering.readings
        and "goes backwards" in older.discrepancies[-1]
    )


def test_a_verified_signed_stop_record_is_the_billing_truth() -> None:
    s = at(charging(), e.MeterValue(SID, "m1", 1000 + 6000), 20)
    # no identification: its begin is the session's start reading, so it is this session's
    record = SignedMeter("h" * 64, "OCMF|{}|{}", "M1", "", 1_000, 8_000, True, "ok", "key")
    stop = at(
        s, e.ChargerStopped(session_id=SID, event_id="stopped:x", meter_wh=1000, signed=record), 21
    )
    assert stop.state is not State.CHARGING and stop.metering.billed_energy_wh == 7_000


def test_the_discrepancies_kept_are_bounded() -> None:
    s = charging()
    for n in range(80):
        s = at(s, e.MeterValue(SID, f"g{n}", 1000 + 10**9), 1 + n / 100)
    assert len(s.discrepancies) == 50
