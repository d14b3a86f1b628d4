"""A finished session's outcome → the OCPI Financial Advice Confirmation (or nothing).

Only a capture outcome is confirmed upstream: COMPLETED → SUCCESS (PARTIAL_SUCCESS when the
terminal booked less than asked), CAPTURE_FAILED → FAILED. In the OCPI standard flow the CDR
decides who invoices: with an ``invoice_reference_id`` the CPO does and gets the FAC; without
one the PTP invoices (the terminal receipt) and no FAC is sent. A session that ended without a
capture (declined, voided, failed) has nothing to confirm; its outcome stays in the local
journal. Taxes: the captured gross amount is split with the tariff's own ratio of price
before taxes to price after taxes, rounded to minor units, so before_taxes + taxes = captured.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from drivers.money import Money, currency
from gateway.ocpi.models import CaptureStatusCode, FinancialAdviceConfirmation, Price, TaxAmount


def fac_from_outcome(payload: dict[str, Any], now: datetime) -> FinancialAdviceConfirmation | None:
    state = payload["state"]
    if state not in ("completed", "capture_failed") or not payload.get("authorization_reference"):
        return None
    if payload.get("invoicer") == "ptp":  # the CDR had no invoice_reference_id: we invoice, no FAC is due
        return None
    cur = payload["currency"]
    exponent = currency(cur).exponent
    captured = Money(payload["captured_minor"], cur)
    gross = captured.to_decimal()
    price_incl = Money(payload["price_minor"], cur).to_decimal()
    price_excl = Decimal(payload.get("price_excl") or "0")
    if price_incl > 0 and price_excl > 0:
        before = (gross * price_excl / price_incl).quantize(Decimal(1).scaleb(-exponent), ROUND_HALF_UP)
    else:
        before = gross
    partial = any(str(n).startswith("partial capture") for n in payload.get("notes", ()))
    if state == "capture_failed":
        code, message = CaptureStatusCode.FAILED, "capture failed before the hold lapsed"
    elif partial:
        code, message = CaptureStatusCode.PARTIAL_SUCCESS, "the terminal booked less than the price"
    else:
        code, message = CaptureStatusCode.SUCCESS, "captured at the terminal"
    card = payload.get("card") or {}
    eft = [f"Amount: {captured}"]
    if card.get("brand"):
        eft.insert(0, str(card["brand"]))
    if card.get("aid"):
        eft.append(f"AID: {card['aid']}")
    if card.get("masked_pan"):
        eft.append(f"PAN: {card['masked_pan']}")
    if payload.get("receipt_no") is not None:
        eft.append(f"Receipt: {int(payload['receipt_no']):04d}")
    taxes = [TaxAmount(name="VAT", amount=gross - before)] if gross != before else None
    return FinancialAdviceConfirmation(
        id=str(payload["session_id"])[:36],
        authorization_reference=payload["authorization_reference"],
        total_costs=Price(before_taxes=before, taxes=taxes),
        currency=cur,
        eft_data=eft,
        capture_status_code=code,
        capture_status_message=message,
        last_updated=now,
    )
