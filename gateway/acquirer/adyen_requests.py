"""Adyen Checkout API modifications, sans I/O: a ``Modification`` in, an HTTP request out; an
HTTP answer in, ``Received`` or a typed error out.

Paths and bodies follow Adyen's public Checkout API (OpenAPI, Adyen/adyen-openapi):
``/payments/{paymentPspReference}/amountUpdates|captures|cancels|refunds`` and ``/cancels``
(by our merchant reference, for a payment whose pspReference never reached us). Amounts are
``{"value": minor units, "currency": ISO 4217}``. The ``Idempotency-Key`` header is derived
from our stable command key only, so a retry after a lost answer is the same request to Adyen
and never a second modification.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from drivers.money import Money
from gateway.acquirer.port import Modification, Received
from gateway.errors import AcquirerRejected, AcquirerUnreachable

IDEMPOTENCY_KEY_MAX = 64  # Adyen accepts keys up to 64 characters
REFERENCE_MAX = 80  # Adyen's limit for "reference"
_ANSWER_MAX = 4096  # characters of an error answer kept in a message

_PATHS = {
    "amount_update": "amountUpdates",
    "capture": "captures",
    "cancel": "cancels",
    "refund": "refunds",
}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str  # relative to the API base URL (which carries the version, e.g. …/v71)
    headers: dict[str, str]
    body: bytes


def idempotency_key(command_key: str) -> str:
    """Deterministic from the command key alone: the same key on every retry, on every restart.
    Hashed, so it fits Adyen's 64 characters whatever our key looks like."""
    return hashlib.sha256(f"evpay-acquirer:{command_key}".encode()).hexdigest()


def _amount(money: Money) -> dict[str, Any]:
    return {"value": money.minor, "currency": money.currency}


def build(modification: Modification, *, merchant_account: str) -> HttpRequest:
    """The request for one modification (the capture ceiling was checked when it was made)."""
    body: dict[str, Any] = {
        "merchantAccount": merchant_account,
        "reference": modification.command_key[:REFERENCE_MAX],
    }
    if modification.kind == "cancel_by_reference":
        body["paymentReference"] = modification.merchant_reference
        path = "/cancels"
    else:
        path = f"/payments/{modification.payment_reference}/{_PATHS[modification.kind]}"
    if modification.amount is not None:
        body["amount"] = _amount(modification.amount)
    if modification.kind == "amount_update":
        body["industryUsage"] = "delayedCharge"
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key(modification.command_key),
    }
    return HttpRequest("POST", path, headers, json.dumps(body, sort_keys=True).encode())


def parse_answer(command_key: str, status: int, body: bytes) -> Received:
    """Adyen's answer: 201 with ``status: received`` and the modification's pspReference, or a
    refusal (AcquirerRejected with Adyen's errorCode). A 2xx that does not say "received" is
    neither: not an outcome, and not a refusal (the acquirer may have applied it), so it is
    AcquirerUnreachable(ambiguous): kept and sent again under the same idempotency key."""
    try:
        data = json.loads(body) if body else {}
    except (ValueError, RecursionError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    if status in (200, 201) and data.get("status") == "received":
        psp = data.get("pspReference")
        if isinstance(psp, str) and psp:
            return Received(command_key, psp)
    if 200 <= status < 300:  # a success we cannot read: maybe applied, certainly not refused
        raise AcquirerUnreachable(
            f"HTTP {status} without 'received' and its pspReference (a proxy's page, a cut "
            "answer?): the modification may have been applied; sent again under the same key",
            ambiguous=True,
        )
    code = data.get("errorCode")
    message = data.get("message") or body.decode("utf-8", "replace")[:_ANSWER_MAX]
    raise AcquirerRejected(
        f"Adyen refused the modification (HTTP {status}): {message}",
        http_status=status,
        error_code=str(code) if code is not None else None,
    )


REFUSALS = frozenset({400, 422})  # the modification itself is refused: final


def try_again(status: int) -> bool:
    """Not a verdict on the modification: our side (401/403: the API key or the merchant
    account, 404: the base URL, 409: the same key still in progress) or Adyen's (429, 5xx).
    It stays queued, the error visible, and is sent again under the same idempotency key."""
    return status not in REFUSALS and not 200 <= status < 300
