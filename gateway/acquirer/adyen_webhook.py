"""Adyen's standard webhooks, sans I/O: check the HMAC signature and parse the modification
events, strictly.

The signature (Adyen's documentation "Verify HMAC signatures") is HMAC-SHA256, keyed with the
hex-decoded HMAC key, over the values of pspReference, originalReference, merchantAccountCode,
merchantReference, amount value, amount currency, eventCode and success, joined by ``:``
(absent values are empty), base64-encoded in ``additionalData.hmacSignature``. A notification
whose signature does not match is refused whole: it is not evidence of anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from drivers.errors import AmountError
from drivers.money import Money
from gateway.acquirer.port import EVENT_CODES, ModificationEvent
from gateway.errors import BadInput

AMOUNT_MAX = 2**63 - 1  # minor units: Adyen's amount value is a 64-bit integer
MAX_ITEMS = 100  # notification items in one request; Adyen sends batches far smaller
_SIGNED = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)


class WebhookInvalid(BadInput):
    """The notification is malformed or its signature does not match: refused, not stored."""

    code = "webhook_invalid"


def hmac_key_bytes(hex_key: str) -> bytes:
    try:
        key = binascii.unhexlify(hex_key.strip())
    except (binascii.Error, ValueError):
        raise WebhookInvalid("the webhook HMAC key is not hex") from None
    if not key:
        raise WebhookInvalid("the webhook HMAC key is empty")
    return key


def signing_string(item: dict[str, Any]) -> str:
    found = item.get("amount")
    amount: dict[str, Any] = found if isinstance(found, dict) else {}
    values = {**item, "value": amount.get("value", ""), "currency": amount.get("currency", "")}
    return ":".join(_text(values.get(name)) for name in _SIGNED)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def signature(item: dict[str, Any], key: bytes) -> str:
    digest = hmac.new(key, signing_string(item).encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_matches(item: dict[str, Any], key: bytes) -> bool:
    extra = item.get("additionalData")
    given = extra.get("hmacSignature") if isinstance(extra, dict) else None
    if not isinstance(given, str) or not given or not given.isascii():  # base64 is ASCII
        return False
    return hmac.compare_digest(signature(item, key), given)


def parse_notification(raw: bytes, key: bytes) -> list[ModificationEvent]:
    """Every item of one notification request, each signature checked. Items about events this
    port does not handle (AUTHORISATION, REPORT_AVAILABLE, …) are dropped after their
    signature is checked: Adyen must still get ``[accepted]`` for them."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise WebhookInvalid("the body is not JSON") from None
    except RecursionError:  # nested beyond the parser's depth: malformed, not a store fault
        raise WebhookInvalid("the body is nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("notificationItems"), list):
        raise WebhookInvalid("no notificationItems list")
    items = data["notificationItems"]
    if not items or len(items) > MAX_ITEMS:
        raise WebhookInvalid(f"expected 1 to {MAX_ITEMS} notification items, got {len(items)}")
    live = _flag(data.get("live", "false"), "live")
    events = []
    for index, wrapper in enumerate(items):
        item = wrapper.get("NotificationRequestItem") if isinstance(wrapper, dict) else None
        if not isinstance(item, dict):
            raise WebhookInvalid(f"item {index}: no NotificationRequestItem object")
        if not signature_matches(item, key):
            raise WebhookInvalid(f"item {index}: the HMAC signature does not match")
        if item.get("eventCode") in EVENT_CODES:
            events.append(_event(item, index, live))
    return events


def _event(item: dict[str, Any], index: int, live: bool) -> ModificationEvent:
    def text(name: str, *, required: bool = True) -> str:
        value = item.get(name)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value):
            raise WebhookInvalid(f"item {index}: {name} must be a non-empty string")
        return value

    original = text("originalReference", required=False) or None
    return ModificationEvent(
        event=text("eventCode"),
        psp_reference=text("pspReference"),
        original_reference=original,
        merchant_reference=text("merchantReference", required=False),
        merchant_account=text("merchantAccountCode"),
        success=_flag(item.get("success"), f"item {index}: success"),
        amount=_money(item.get("amount"), index),
        reason=text("reason", required=False)[:500],
        event_date=text("eventDate", required=False),
        live=live,
    )


def _flag(value: object, what: str) -> bool:
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise WebhookInvalid(f"{what} must be 'true' or 'false'")


def _money(value: object, index: int) -> Money | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WebhookInvalid(f"item {index}: amount must be an object")
    minor, currency = value.get("value"), value.get("currency")
    if not isinstance(minor, int) or isinstance(minor, bool) or not isinstance(currency, str):
        raise WebhookInvalid(f"item {index}: amount needs an integer value and a currency")
    if minor > AMOUNT_MAX:  # Adyen's value is an int64; beyond it nothing could be stored
        raise WebhookInvalid(f"item {index}: amount value beyond {AMOUNT_MAX}")
    try:
        return Money(minor, currency)
    except AmountError as exc:
        raise WebhookInvalid(f"item {index}: amount: {exc}") from None


def signed_item(item: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``item`` with its signature in additionalData (what the simulator sends)."""
    extra = dict(item.get("additionalData") or {})
    extra["hmacSignature"] = signature(item, key)
    return {**item, "additionalData": extra}
