"""Golden: every payments example of the spec parses; what the gateway produces follows the tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.ocpi.fac import fac_from_outcome
from gateway.ocpi.models import (
    Credentials,
    FinancialAdviceConfirmation,
    Terminal,
    TerminalPatch,
    VersionDetails,
)

DATA = (
    Path(__file__).resolve().parent.parent / "data" / "ocpi"
)  # copied from ocpi/ocpi v2.3.0-ed2-payments


@pytest.mark.parametrize("path", sorted(DATA.glob("payment_*.json")), ids=lambda p: p.name)
def test_every_payments_example_parses(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    if "financial_advice" in path.name:
        fac = FinancialAdviceConfirmation.model_validate(data)
        assert fac.total_costs.total == Decimal(
            str(data["total_costs"]["incl_vat"])
        )  # 2.2.1 Price read as 2.3.0
    elif path.name in (
        "payment_terminal_location_assignment.json",
        "payment_terminal_put_update.json",
    ):
        TerminalPatch.model_validate(data)
    else:
        Terminal.model_validate(data)


@pytest.mark.parametrize("name", ["credentials_example.json", "credentials_example2.json"])
def test_credentials_and_version_examples(name: str) -> None:
    Credentials.model_validate(json.loads((DATA / name).read_text(encoding="utf-8")))
    VersionDetails.model_validate(
        json.loads((DATA / "version_details_example.json").read_text(encoding="utf-8"))
    )


def test_field_rules_are_enforced() -> None:
    base = json.loads(
        (DATA / "payment_financial_advice_confirmation_example_success.json").read_text(
            encoding="utf-8"
        )
    )
    for field, value in (
        ("id", "x" * 37),
        ("currency", "eur"),
        ("capture_status_code", "DONE"),
        ("last_updated", "2018-12-10T17:16:15"),
        ("authorization_reference", "é"),
    ):
        with pytest.raises(ValidationError):
            FinancialAdviceConfirmation.model_validate({**base, field: value})
    assert (
        FinancialAdviceConfirmation.model_validate({**base, "unknown_extra": 1})
        .to_json()
        .get("unknown_extra")
        is None
    )
    for number in (
        float("nan"),
        float("inf"),
        json.loads("NaN"),
    ):  # Python's JSON reader accepts NaN
        with pytest.raises(ValidationError, match="not a finite number"):
            FinancialAdviceConfirmation.model_validate(
                {**base, "total_costs": {"before_taxes": number}}
            )


def test_fac_from_a_completed_session_follows_the_230_tables() -> None:
    payload = {
        "session_id": "abc",
        "authorization_reference": "EVP-abc",
        "state": "completed",
        "currency": "EUR",
        "captured_minor": 1169,
        "price_minor": 1169,
        "price_excl": "9.82",
        "ref": "1",
        "card": {"brand": "MasterCard", "masked_pan": "541333******0074", "aid": "A0000000041010"},
        "notes": [],
    }
    fac = fac_from_outcome(payload, datetime(2026, 1, 5, 12, tzinfo=UTC))
    assert fac is not None
    out = fac.to_json()
    assert out["total_costs"] == {"before_taxes": 9.82, "taxes": [{"name": "VAT", "amount": 1.87}]}
    assert out["capture_status_code"] == "SUCCESS" and out["last_updated"] == "2026-01-05T12:00:00Z"
    assert "PAN: 541333******0074" in out["eft_data"] and "Amount: 11.69 EUR" in out["eft_data"]
    assert "Receipt: 1" in out["eft_data"]  # the hold's reference, as the terminal gave it
    # an outcome queued before 0013 names it by ZVT's integer receipt number
    old = {k: v for k, v in payload.items() if k != "ref"} | {"receipt_no": 7}
    old_fac = fac_from_outcome(old, datetime(2026, 1, 5, 12, tzinfo=UTC))
    assert old_fac is not None and "Receipt: 7" in old_fac.to_json()["eft_data"]
    FinancialAdviceConfirmation.model_validate(out)  # what we produce, we would accept
    assert fac_from_outcome({**payload, "state": "voided"}, datetime.now(UTC)) is None
    failed = fac_from_outcome(
        {**payload, "state": "capture_failed", "captured_minor": 0}, datetime.now(UTC)
    )
    assert (
        failed is not None and failed.capture_status_code == "FAILED" and failed.eft_data
    )  # D3: never empty


def test_no_fac_when_the_ptp_invoices() -> None:
    payload = {
        "session_id": "abc",
        "authorization_reference": "EVP-abc",
        "state": "completed",
        "currency": "EUR",
        "captured_minor": 100,
        "price_minor": 100,
        "price_excl": "0.84",
        "notes": [],
    }
    assert fac_from_outcome({**payload, "invoicer": "ptp"}, datetime.now(UTC)) is None
    assert (
        fac_from_outcome(
            {**payload, "invoicer": "cpo", "invoice_reference": "INV-1"}, datetime.now(UTC)
        )
        is not None
    )
    assert (
        fac_from_outcome(payload, datetime.now(UTC)) is not None
    )  # the local flow: the CPO is told


@pytest.mark.parametrize("path", sorted(DATA.glob("tariff_*.json")), ids=lambda p: p.name)
def test_every_tariff_example_validates(path: Path) -> None:
    from gateway.wire import OcpiTariff

    OcpiTariff.model_validate(json.loads(path.read_text(encoding="utf-8")))
