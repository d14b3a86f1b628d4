"""What each nexo Result/ErrorCondition means for the money (pure mapping)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from drivers.base import Outcome
from drivers.money import Money
from drivers.nexo import messages as nm
from drivers.nexo import results as r
from drivers.nexo.asyncio.terminal import NexoTerminal
from drivers.nexo.errors import NexoFormatError
from drivers.nexo.model import (
    AmountsResp,
    ErrorCondition,
    POIData,
    Response,
    Result,
    SaleData,
    TransactionIdentification,
)

TID = TransactionIdentification("T9", "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("result", "condition", "outcome"),
    [
        (Result.SUCCESS, None, Outcome.APPROVED),
        (Result.PARTIAL, None, Outcome.APPROVED),
        (Result.FAILURE, ErrorCondition.REFUSAL, Outcome.DECLINED),
        (Result.FAILURE, ErrorCondition.WRONG_PIN, Outcome.DECLINED),
        (Result.FAILURE, ErrorCondition.CANCEL, Outcome.ABORTED),
        (Result.FAILURE, ErrorCondition.ABORTED, Outcome.ABORTED),
        (Result.FAILURE, ErrorCondition.BUSY, Outcome.BUSY),
        (Result.FAILURE, ErrorCondition.IN_PROGRESS, Outcome.BUSY),
        (Result.FAILURE, ErrorCondition.NOT_ALLOWED, Outcome.ERROR),
        (Result.FAILURE, None, Outcome.ERROR),
    ],
)
def test_outcomes(result: Result, condition: ErrorCondition | None, outcome: Outcome) -> None:
    assert r.outcome_of(Response(result, condition)) is outcome


def _payment(result: Result, amount: str, currency: str = "EUR") -> nm.PaymentResponse:
    return nm.PaymentResponse(
        Response(result),
        SaleData(TID),
        POIData(TID),
        nm.PaymentResult(amounts_resp=AmountsResp(Decimal(amount), currency)),
    )


def test_partial_books_what_the_poi_authorised_and_failure_books_nothing() -> None:
    part = r.payment_result("sale", _payment(Result.PARTIAL, "7.50"), "EUR", service_id="1")
    assert part.approved and part.amount == Money(750, "EUR")
    failed = r.payment_result("sale", _payment(Result.FAILURE, "7.50"), "EUR", service_id="1")
    assert failed.amount is None  # an amount only on positive evidence


def test_an_amount_finer_than_the_currency_is_a_typed_error() -> None:
    with pytest.raises(NexoFormatError):
        r.payment_result("sale", _payment(Result.SUCCESS, "7.505"), "EUR", service_id="1")


def test_end_of_day_totals_per_brand_and_currency() -> None:
    body = nm.ReconciliationResponse(
        Response(Result.SUCCESS),
        "SaleReconciliation",
        (
            nm.TransactionTotals(
                "Card", (nm.PaymentTotals("Debit", 2, Decimal("12.30")),), "visa", "EUR"
            ),
            nm.TransactionTotals("Card", (nm.PaymentTotals("Debit", 1, Decimal(5)),), "mc", "SEK"),
        ),
    )
    eod = r.reconciliation_result(body, "EUR")
    assert [(t.brand, t.currency, t.count, t.amount_minor) for t in eod.totals] == [
        ("visa", "EUR", 2, 1230),
        ("mc", "SEK", 1, 500),
    ]
    assert eod.batch_range is None  # nexo has no receipt range


@pytest.mark.parametrize(
    ("additional", "transaction_id", "psp"),
    [
        # Adyen's answer: form-encoded AdditionalResponse, TransactionID tender.psp
        (
            "pspReference=8815000000000001&tenderReference=T1",
            "T1.8815000000000001",
            "8815000000000001",
        ),
        (None, "oLkO001517998574000.8815179985744230", "8815179985744230"),
        ("pspReference=8815000000000009", "T1", "8815000000000009"),
        ("pspReference=bad%20ref", "T1", None),  # not a reference: nothing rather than a guess
        (None, "T000001", None),  # a POI that is not Adyen's: no acquirer reference
        ("Declined by issuer", "T1.", None),
    ],
)
def test_adyen_payment_reference(
    additional: str | None, transaction_id: str, psp: str | None
) -> None:
    response = Response(Result.SUCCESS, None, additional)
    assert r.psp_reference(response, transaction_id) == psp


def test_the_payment_reference_of_a_nexo_hold_is_read_from_its_ref() -> None:
    """A nexo hold's ref is the POI transaction (TransactionID@TimeStamp); a time stamp with
    fractions of a second has a dot of its own, which must not be taken for the pspReference."""
    ref = "T000001.8816000000000001@2026-01-01T00:00:00.123Z"
    assert NexoTerminal.payment_reference(ref) == "8816000000000001"
    assert NexoTerminal.payment_reference("T000001@2026-01-01T00:00:00.123Z") is None
