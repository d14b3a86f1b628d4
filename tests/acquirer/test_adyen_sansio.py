"""The Adyen profile's pure parts: HMAC (Adyen's own vector), request building, answers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from drivers.money import Money
from gateway.acquirer import adyen_requests, adyen_webhook
from gateway.acquirer.port import Modification
from gateway.acquirer.profiles import PROFILES, profile
from gateway.errors import (
    AcquirerRejected,
    AcquirerUnreachable,
    ConfigError,
    ModificationRefused,
)

VECTOR = json.loads((Path(__file__).parents[1] / "data/adyen/hmac_vector.json").read_text())
EUR = "EUR"


def test_hmac_reproduces_adyens_library_vector() -> None:
    key = adyen_webhook.hmac_key_bytes(VECTOR["key_hex"])
    assert adyen_webhook.signature(VECTOR["item"], key) == VECTOR["expected_signature"]
    signed = {**VECTOR["item"], "additionalData": {"hmacSignature": VECTOR["expected_signature"]}}
    assert adyen_webhook.signature_matches(signed, key)


@pytest.mark.parametrize(
    ("field", "value"),
    [("pspReference", "7914073381342285"), ("success", "false"), ("merchantReference", "x")],
)
def test_hmac_refuses_any_signed_field_changed(field: str, value: str) -> None:
    key = adyen_webhook.hmac_key_bytes(VECTOR["key_hex"])
    item = {**VECTOR["item"], field: value}
    item["additionalData"] = {"hmacSignature": VECTOR["expected_signature"]}
    assert not adyen_webhook.signature_matches(item, key)


def test_hmac_refuses_a_changed_amount_and_a_missing_signature() -> None:
    key = adyen_webhook.hmac_key_bytes(VECTOR["key_hex"])
    item = copy.deepcopy(VECTOR["item"])
    item["amount"]["value"] = 1131
    item["additionalData"] = {"hmacSignature": VECTOR["expected_signature"]}
    assert not adyen_webhook.signature_matches(item, key)
    assert not adyen_webhook.signature_matches(VECTOR["item"], key)


def _notification(item: dict[str, Any], key_hex: str = "AA" * 32) -> bytes:
    key = adyen_webhook.hmac_key_bytes(key_hex)
    return json.dumps(
        {
            "live": "false",
            "notificationItems": [
                {"NotificationRequestItem": adyen_webhook.signed_item(item, key)}
            ],
        }
    ).encode()


CAPTURE = {
    "eventCode": "CAPTURE",
    "pspReference": "8815000000000001",
    "originalReference": "8800000000000042",
    "merchantAccountCode": "EVPayTest",
    "merchantReference": "session-1/capture",
    "amount": {"value": 1234, "currency": "EUR"},
    "success": "true",
    "eventDate": "2026-12-07T12:00:00+01:00",
}


def test_parses_a_signed_capture_event() -> None:
    (event,) = adyen_webhook.parse_notification(
        _notification(CAPTURE), adyen_webhook.hmac_key_bytes("AA" * 32)
    )
    assert event.event == "CAPTURE" and event.success and event.confirms
    assert event.amount == Money(1234, EUR)
    assert event.original_reference == "8800000000000042"
    assert event.dedupe_key == "8815000000000001|CAPTURE|true|8800000000000042"


def test_capture_failed_never_confirms_even_when_success_is_true() -> None:
    (event,) = adyen_webhook.parse_notification(
        _notification({**CAPTURE, "eventCode": "CAPTURE_FAILED"}),
        adyen_webhook.hmac_key_bytes("AA" * 32),
    )
    assert event.success and not event.confirms


def test_unhandled_event_codes_are_checked_then_dropped() -> None:
    events = adyen_webhook.parse_notification(
        _notification({**CAPTURE, "eventCode": "AUTHORISATION"}),
        adyen_webhook.hmac_key_bytes("AA" * 32),
    )
    assert events == []


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"notificationItems": []}',
        b'{"notificationItems": [{"x": 1}]}',
        _notification({**CAPTURE, "success": "yes"}),
        _notification({**CAPTURE, "amount": {"value": "12", "currency": "EUR"}}),
        _notification({**CAPTURE, "amount": {"value": 12, "currency": "XXQ"}}),
        _notification({**CAPTURE, "pspReference": ""}),
        _notification(CAPTURE, key_hex="BB" * 32),  # signed with another key
    ],
)
def test_refuses_malformed_or_unsigned_notifications(raw: bytes) -> None:
    with pytest.raises(adyen_webhook.WebhookInvalid):
        adyen_webhook.parse_notification(raw, adyen_webhook.hmac_key_bytes("AA" * 32))


def test_capture_above_the_authorised_amount_is_refused_before_sending() -> None:
    with pytest.raises(ModificationRefused, match="above the authorised"):
        Modification(
            "k",
            "capture",
            payment_reference="P",
            amount=Money(5001, EUR),
            authorised=Money(5000, EUR),
        )
    with pytest.raises(ModificationRefused, match="authorised in"):
        Modification(
            "k", "capture", payment_reference="P", amount=Money(1, EUR), authorised=Money(9, "CHF")
        )
    with pytest.raises(ModificationRefused, match="authorised amount"):
        Modification("k", "capture", payment_reference="P", amount=Money(1, EUR))


def test_requests_follow_the_checkout_api() -> None:
    cases = [
        (Modification("s1/adj", "amount_update", "P1", amount=Money(7000, EUR)), "amountUpdates"),
        (
            Modification(
                "s1/cap", "capture", "P1", amount=Money(10, EUR), authorised=Money(10, EUR)
            ),
            "captures",
        ),
        (Modification("s1/can", "cancel", "P1"), "cancels"),
        (Modification("s1/ref", "refund", "P2", amount=Money(5, EUR)), "refunds"),
    ]
    for modification, tail in cases:
        request = adyen_requests.build(modification, merchant_account="EVPayTest")
        assert request.method == "POST"
        assert request.path == f"/payments/{modification.payment_reference}/{tail}"
        body = json.loads(request.body)
        assert body["merchantAccount"] == "EVPayTest"
        assert body["reference"] == modification.command_key
        if modification.amount is not None:
            assert body["amount"] == {"value": modification.amount.minor, "currency": "EUR"}
        else:
            assert "amount" not in body
    by_reference = adyen_requests.build(
        Modification("s2/cancel", "cancel_by_reference", merchant_reference="session-2"),
        merchant_account="EVPayTest",
    )
    assert by_reference.path == "/cancels"
    assert json.loads(by_reference.body)["paymentReference"] == "session-2"


def test_idempotency_key_depends_on_the_command_key_only() -> None:
    a = Modification("s1/cap", "capture", "P1", amount=Money(10, EUR), authorised=Money(10, EUR))
    b = Modification("s1/cap", "capture", "P1", amount=Money(10, EUR), authorised=Money(10, EUR))
    c = Modification("s1/cap2", "capture", "P1", amount=Money(10, EUR), authorised=Money(10, EUR))
    key = adyen_requests.build(a, merchant_account="M").headers["Idempotency-Key"]
    assert key == adyen_requests.build(b, merchant_account="M").headers["Idempotency-Key"]
    assert key != adyen_requests.build(c, merchant_account="M").headers["Idempotency-Key"]
    assert len(key) <= adyen_requests.IDEMPOTENCY_KEY_MAX
    assert key == adyen_requests.idempotency_key("s1/cap")


def test_answers_received_or_typed_refusal_never_an_outcome() -> None:
    ok = adyen_requests.parse_answer("k", 201, b'{"status": "received", "pspReference": "X1"}')
    assert ok.acquirer_reference == "X1"
    with pytest.raises(AcquirerRejected) as refused:
        adyen_requests.parse_answer(
            "k", 422, b'{"status": 422, "errorCode": "137", "message": "Invalid amount"}'
        )
    assert refused.value.error_code == "137" and refused.value.http_status == 422
    # a 2xx that does not say "received" is no answer, and no refusal: sent again, same key
    for body in (b'{"status": "authorised", "pspReference": "X"}', b"<html>", b""):
        with pytest.raises(AcquirerUnreachable) as unread:
            adyen_requests.parse_answer("k", 201, body)
        assert unread.value.ambiguous
    with pytest.raises(AcquirerUnreachable):
        adyen_requests.parse_answer("k", 201, b'{"status": "received"}')  # no pspReference


def test_profiles_are_found_by_name() -> None:
    assert profile("adyen") is PROFILES["adyen"]
    assert profile("adyen").webhook_answer == "[accepted]"
    with pytest.raises(ConfigError, match="unknown acquirer profile"):
        profile("worldline")


@pytest.mark.parametrize(
    ("status", "again"),
    [
        (401, True),
        (403, True),
        (404, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (422, False),
        (201, False),
    ],
)
def test_only_a_verdict_on_the_modification_is_final(status: int, again: bool) -> None:
    assert adyen_requests.try_again(status) is again
