"""Which of a connector's tariff ids a terminal payment pays (gateway.ocpi.tariffs.applicable):
the one valid at the pull, an AD_HOC_PAYMENT one before an untyped one before a REGULAR one;
PROFILE_* tariffs need charging preferences a terminal payment never sets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.ocpi.tariffs import applicable
from gateway.wire import OcpiTariff

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _tariff(tid: str, **extra: Any) -> OcpiTariff:
    element = {"price_components": [{"type": "ENERGY", "price": 0.5, "step_size": 1}]}
    return OcpiTariff.model_validate({"id": tid, "currency": "EUR", "elements": [element], **extra})


def test_the_tariff_valid_now_is_taken() -> None:
    terms = {
        "OLD": _tariff("OLD", end_date_time="2026-12-01T00:00:00Z"),
        "NOW": _tariff("NOW", start_date_time="2026-12-01T00:00:00Z"),
        "NEXT": _tariff("NEXT", start_date_time="2027-01-01T00:00:00Z"),
    }
    assert applicable(["OLD", "NOW", "NEXT"], terms, NOW) == "NOW"
    assert applicable(["OLD", "NEXT"], terms, NOW) is None  # none valid: the EVSE keeps its own
    assert applicable(["NEXT", "NOW"], terms, datetime(2027, 2, 1, tzinfo=UTC)) == "NEXT"


def test_the_kind_a_terminal_payment_pays() -> None:
    terms = {
        "CHEAP": _tariff("CHEAP", type="PROFILE_CHEAP"),
        "RFID": _tariff("RFID", type="REGULAR"),
        "ANY": _tariff("ANY"),
        "CARD": _tariff("CARD", type="AD_HOC_PAYMENT"),
    }
    assert applicable(["CHEAP", "RFID", "ANY", "CARD"], terms, NOW) == "CARD"
    assert applicable(["CHEAP", "RFID", "ANY"], terms, NOW) == "ANY"
    assert applicable(["CHEAP", "RFID"], terms, NOW) == "RFID"
    assert applicable(["CHEAP", "UNKNOWN"], terms, NOW) is None
