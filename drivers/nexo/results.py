"""What a nexo answer means for the money, as the engine's ``TerminalResult``.

Success is APPROVED; Partial is APPROVED for the smaller ``AuthorizedAmount`` (the engine books
what the POI says, never what it asked); Busy is BUSY (nothing happened); Aborted/Cancel are
ABORTED; refusals by card, issuer or PIN are DECLINED; anything else the POI refuses is ERROR.
The POI's own transaction id travels in ``details`` (``poi_transaction_id``/``poi_time_stamp``):
the port has no text reference yet (see the report on issue 28, section 1).
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qs

from drivers.base import BrandTotal, CardInfo, Outcome, TerminalResult
from drivers.errors import AmountError
from drivers.money import Money
from drivers.nexo import messages as nm
from drivers.nexo.errors import NexoFormatError
from drivers.nexo.model import CardData, ErrorCondition, PaymentInstrumentData, Response, Result

_DECLINE = {
    ErrorCondition.REFUSAL,
    ErrorCondition.PAYMENT_RESTRICTION,
    ErrorCondition.INVALID_CARD,
    ErrorCondition.WRONG_PIN,
}
_ABORT = {ErrorCondition.ABORTED, ErrorCondition.CANCEL}
_BUSY = {ErrorCondition.BUSY, ErrorCondition.IN_PROGRESS}


def outcome_of(response: Response) -> Outcome:
    if response.result in (Result.SUCCESS, Result.PARTIAL):
        return Outcome.APPROVED
    cond = response.error_condition
    if cond in _BUSY:
        return Outcome.BUSY
    if cond in _ABORT:
        return Outcome.ABORTED
    if cond in _DECLINE:
        return Outcome.DECLINED
    return Outcome.ERROR


def money_of(where: str, amount: Decimal, currency: str) -> Money:
    try:
        return Money.parse(str(amount), currency)
    except AmountError as exc:
        raise NexoFormatError(where, str(exc)) from None


def card_of(instrument: PaymentInstrumentData | None) -> CardInfo | None:
    card: CardData | None = instrument.card_data if instrument else None
    if card is None:
        return None
    masked = card.masked_pan
    if masked is None:  # Adyen's JSON spells it MaskedPan
        masked = next((x.raw.strip('"') for x in card.extra if x.name == "MaskedPan"), None)
    if masked is not None and sum(c.isdigit() for c in masked) > 10:
        masked = None  # never carry more than first 6 / last 4
    return CardInfo(masked_pan=masked, brand=card.payment_brand)


def psp_reference(response: Response | None, transaction_id: str) -> str | None:
    """Adyen's reference of the payment, which its online modifications (capture, cancel,
    refund) name: its Terminal API answer carries it form-encoded in AdditionalResponse
    (``pspReference=…``) and as the part of POITransactionID.TransactionID after the dot
    (``tenderReference.pspReference``). None for a POI that shows neither."""
    extra = response.additional_response if response is not None else None
    if extra and "=" in extra:
        found = parse_qs(extra).get("pspReference")
        if found and found[0].isalnum():
            return found[0]
    _, dot, after = transaction_id.rpartition(".")
    return after if dot and after.isalnum() else None


def _details(response: Response, **more: str | None) -> dict[str, str]:
    out = {k: v for k, v in more.items() if v is not None}
    out["result"] = response.result.value
    if response.error_condition is not None:
        out["error_condition"] = response.error_condition.value
    return out


def _message(response: Response) -> str:
    if response.result is Result.SUCCESS:
        return "approved"
    if response.result is Result.PARTIAL:
        return "partially approved"
    return f"{response.error_condition or 'failure'}: {response.additional_response or ''}".strip()


def payment_result(
    operation: str, body: nm.PaymentResponse, currency: str, *, service_id: str
) -> TerminalResult:
    pr = body.payment_result
    amount = None
    if pr and pr.amounts_resp and outcome_of(body.response) is Outcome.APPROVED:
        resp = pr.amounts_resp
        amount = money_of("AmountsResp", resp.authorized_amount, resp.currency or currency)
    tid = body.poi_data.poi_transaction_id
    lines = tuple(line for r in body.payment_receipt for line in r.output_content.lines())
    return TerminalResult(
        operation,
        outcome_of(body.response),
        _message(body.response),
        amount=amount,
        card=card_of(pr.payment_instrument_data if pr else None),
        receipt_lines=lines,
        details=_details(
            body.response,
            service_id=service_id,
            poi_transaction_id=tid.transaction_id,
            poi_time_stamp=tid.time_stamp,
            psp_reference=psp_reference(body.response, tid.transaction_id),
            poi_reconciliation_id=body.poi_data.poi_reconciliation_id,
            payment_type=pr.payment_type.value if pr and pr.payment_type else None,
        ),
    )


def reversal_result(
    operation: str, body: nm.ReversalResponse, currency: str, *, service_id: str
) -> TerminalResult:
    amount = None
    if body.reversed_amount is not None and outcome_of(body.response) is Outcome.APPROVED:
        amount = money_of("ReversedAmount", body.reversed_amount, currency)
    tid = body.poi_data.poi_transaction_id if body.poi_data else None
    return TerminalResult(
        operation,
        outcome_of(body.response),
        _message(body.response),
        amount=amount,
        details=_details(
            body.response,
            service_id=service_id,
            poi_transaction_id=tid.transaction_id if tid else None,
        ),
    )


def reconciliation_result(body: nm.ReconciliationResponse, currency: str) -> TerminalResult:
    """Totals per card brand and currency (a batch may hold more than one currency); no
    receipt range: nexo has none."""
    totals: list[BrandTotal] = []
    for t in body.transaction_totals:
        cur = t.payment_currency or currency
        count = sum(p.transaction_count for p in t.payment_totals)
        amount = sum((p.transaction_amount for p in t.payment_totals), Decimal(0))
        minor = money_of("TransactionTotals", amount, cur).minor
        totals.append(BrandTotal(t.card_brand or "other", count, minor, cur))
    details = _details(body.response, poi_reconciliation_id=body.poi_reconciliation_id)
    return TerminalResult(
        "end_of_day",
        outcome_of(body.response),
        _message(body.response),
        totals=tuple(totals),
        details=details,
    )


def simple_result(operation: str, response: Response, **more: str | None) -> TerminalResult:
    return TerminalResult(
        operation, outcome_of(response), _message(response), details=_details(response, **more)
    )


def poi_ref(transaction_id: str, time_stamp: str) -> str:
    """A hold's reference for the engine: the POI transaction itself (``TransactionID`` and
    ``TimeStamp`` together identify it in nexo), ``TransactionID@TimeStamp``; a TimeStamp
    holds no ``@``, so the last one splits it again (``NexoTerminal._tid``)."""
    return f"{transaction_id}@{time_stamp}"
