"""A finished session's outcome → the OCPI Financial Advice Confirmation (or nothing).

A FAC says what was captured against what was priced, and every amount owed goes up too:
- COMPLETED → SUCCESS with the captured amount; PARTIAL_SUCCESS when the price was above the
  hold (a shortfall: captured the hold, the rest is owed — the message says both figures);
- CAPTURE_FAILED (the hold lapsed uncaptured) → FAILED with the amount owed as total_costs and
  the reason in the message; when an earlier hold of the session was captured, PARTIAL_SUCCESS
  with what was captured (the message says what is owed): the CPO must never hear "nothing
  captured" for money taken;
- a CAPTURE_UNCONFIRMED session (no evidence either way) sends no outcome at all until the
  end-of-day evidence decides it (``payments/evidence.py``);
- a booked capture the acquirer reports failed after all (``correction_of``): the session's
  outcome again, as it is now (FAILED, or PARTIAL_SUCCESS when another hold was captured),
  under its own FAC id (``<session>-C``, a later hold's ``-C<n>``: FACs are POSTed once) for
  the same authorization_reference, its message naming the FAC it corrects;
- energy reported after a session ended (``unpaid_energy_wh``, its message ``debt_only``) →
  FAILED with the amount owed, under its own FAC id (``<session>-U``), since the first
  outcome already went; energy reported late while the session was still settling is owed in
  the session's own FAC (PARTIAL_SUCCESS).
A session that ended without a capture and owes nothing (declined, voided, failed) has
nothing to confirm; its outcome stays in the local journal. In the OCPI standard flow the CDR
decides who invoices: with an ``invoice_reference_id`` the CPO does and gets the FAC; without
one the PTP invoices (the terminal receipt) and no FAC is sent. Taxes: the gross amount is
split with the tariff's own ratio of price before taxes to price after taxes, rounded to
minor units, so before_taxes + taxes = the amount.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from drivers.money import Money, currency
from gateway.ocpi.models import CaptureStatusCode, FinancialAdviceConfirmation
from gateway.wire import Price, TaxAmount

_OWING = ("capture_failed", "capture_unconfirmed")


def ascii_line(text: str) -> str:
    """An eft_data line (CiString(255): printable ASCII)."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:255]


def fac_from_outcome(
    payload: dict[str, Any], now: datetime, *, partial_success: bool = True
) -> FinancialAdviceConfirmation | None:
    """The FAC for an outcome message. ``partial_success=False`` (interop, for CPOs that refuse
    it): a shortfall is sent as SUCCESS with the amount actually captured; the message names it."""
    state = payload["state"]
    # A debt of its own (``-U``): energy reported after the outcome went up (``debt_only``; older
    # messages lack the flag: a debt), or never billed in a session whose outcome is no FAC of
    # its own (voided). In a session that still settles it is in that session's own FAC.
    unpaid = bool(payload.get("unpaid_energy_wh")) and bool(
        payload.get("debt_only", True) or state not in ("completed", *_OWING)
    )
    if not payload.get("authorization_reference") or (
        state not in ("completed", *_OWING) and not payload.get("unpaid_energy_wh")
    ):
        return None
    if (
        payload.get("invoicer") == "ptp"
    ):  # the CDR had no invoice_reference_id: we invoice, no FAC is due
        return None
    cur = payload["currency"]
    exponent = currency(cur).exponent
    captured = Money(payload["captured_minor"], cur)
    owed = Money(payload.get("owed_minor", 0), cur)
    sid = str(payload["session_id"])
    fac_id = sid[:34] + "-U" if unpaid else sid[:36]
    corrects = payload.get("correction_of")
    if corrects and not unpaid:
        # one correction per undone hold (FACs are POSTed once; "already exists" is success):
        # the first is -C, a later hold's -C<n>, so a second correction is never swallowed
        n = int(payload.get("correction_no", 1))
        fac_id = sid[:34] + "-C" if n <= 1 else sid[:32] + f"-C{n}"
    if unpaid:  # that energy's price only: a debt already told in the first FAC is not repeated
        amount, code = Money(payload.get("unpaid_minor", owed.minor), cur), CaptureStatusCode.FAILED
        message = f"{payload['unpaid_energy_wh']} Wh delivered and never billed: {amount} owed"
    elif state in _OWING and captured.minor:
        # part of it was captured (a later hold lapsed uncaptured, or its capture is unconfirmed)
        code = CaptureStatusCode.PARTIAL_SUCCESS if partial_success else CaptureStatusCode.SUCCESS
        amount, message = captured, f"captured {captured}, the rest not: {owed} owed"
    elif state in _OWING:
        amount, code = owed, CaptureStatusCode.FAILED
        why = (
            "the hold lapsed uncaptured"
            if state == "capture_failed"
            else "the capture is unconfirmed"
        )
        message = f"nothing captured: {why}; {owed} owed"
    elif payload.get("shortfall_minor") or owed.minor:
        amount = captured
        code = CaptureStatusCode.PARTIAL_SUCCESS if partial_success else CaptureStatusCode.SUCCESS
        message = f"captured {captured} of {Money(payload['price_minor'], cur)} priced; {owed} owed"
    else:
        amount, code, message = captured, CaptureStatusCode.SUCCESS, "captured at the terminal"
    if corrects and not unpaid:
        message = f"correction of FAC {corrects}: the capture failed after its success; {message}"
    gross = amount.to_decimal()
    price_incl = Money(payload["price_minor"], cur).to_decimal()
    price_excl = Decimal(payload.get("price_excl") or "0")
    if price_incl > 0 and price_excl > 0:
        before = (gross * price_excl / price_incl).quantize(
            Decimal(1).scaleb(-exponent), ROUND_HALF_UP
        )
    else:
        before = gross
    card = payload.get("card") or {}
    eft = [f"Amount: {captured}"]
    if card.get("brand"):
        eft.insert(0, str(card["brand"]))
    if card.get("aid"):
        eft.append(f"AID: {card['aid']}")
    if card.get("masked_pan"):
        eft.append(f"PAN: {card['masked_pan']}")
    # the hold's reference as the terminal gave it (opaque text; a payload queued before 0013
    # carries the ZVT receipt number as "receipt_no"), as the terminal's slip prints it when the
    # driver said (``ref_display``: ZVT's 0042); a payload queued without it shows the ref
    ref = payload.get("ref_display") or payload.get("ref", payload.get("receipt_no"))
    if ref is not None:
        eft.append(f"Receipt: {ref}")
    # the receipt's invoice and fiscal lines, so that the CPO's invoice and the driver's receipt
    # agree
    eft += [ascii_line(str(line)) for line in payload.get("receipt") or () if str(line).strip()]
    taxes = [TaxAmount(name="VAT", amount=gross - before)] if gross != before else None
    return FinancialAdviceConfirmation(
        id=fac_id,
        authorization_reference=payload["authorization_reference"],
        total_costs=Price(before_taxes=before, taxes=taxes),
        currency=cur,
        eft_data=eft,
        capture_status_code=code,
        capture_status_message=message,
        last_updated=now,
    )
