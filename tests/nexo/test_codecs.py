"""The codecs against material we did not write: Adyen's vectors (MIT, tests/data/nexo), and
strict parsing of what a POI may send."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.nexo import adyen_crypto as ac
from drivers.nexo import codec_json, codec_xml
from drivers.nexo import messages as nm
from drivers.nexo.errors import NexoFormatError, NexoSecurityError
from drivers.nexo.model import (
    AmountsReq,
    MessageCategory,
    MessageClass,
    MessageHeader,
    MessageType,
    PaymentType,
    SaleData,
    TransactionIdentification,
)
from drivers.nexo.wire import Wire

DATA = Path(__file__).parent.parent / "data" / "nexo"
ADYEN_KEY = ac.AdyenKey("CryptoKeyIdentifier12345", 1, "p@ssw0rd123456")


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_bytes())
    return loaded


def test_adyen_encrypted_mock_decrypts_and_its_hmac_reproduces() -> None:
    sealed = load("adyen-payment-local-success.json")
    dk = ac.DerivedKey.derive(ADYEN_KEY.passphrase)
    clear = ac.open_secured(sealed, ADYEN_KEY, dk)  # raises unless the HMAC matches
    message = codec_json.decode(clear)
    assert isinstance(message.body, nm.PaymentResponse)
    assert message.body.response.result.value == "Success"
    trailer = sealed["SaleToPOIResponse"]["SecurityTrailer"]
    nonce = base64.b64decode(trailer["Nonce"])
    header = sealed["SaleToPOIResponse"]["MessageHeader"]
    again = ac.seal(clear, header, "SaleToPOIResponse", ADYEN_KEY, dk, nonce)
    assert again["SaleToPOIResponse"]["SecurityTrailer"]["Hmac"] == trailer["Hmac"]
    assert again["SaleToPOIResponse"]["NexoBlob"] == sealed["SaleToPOIResponse"]["NexoBlob"]
    # and the parsed message loses nothing
    assert json.loads(codec_json.encode(message)) == json.loads(clear)


def test_adyen_wrong_passphrase_or_tampering_is_refused() -> None:
    sealed = load("adyen-payment-local-success.json")
    wrong = ac.AdyenKey(ADYEN_KEY.identifier, 1, "not-the-passphrase")
    with pytest.raises(NexoSecurityError):
        ac.open_secured(sealed, wrong, ac.DerivedKey.derive(wrong.passphrase))
    tampered = json.loads(json.dumps(sealed))
    tampered["SaleToPOIResponse"]["SecurityTrailer"]["Hmac"] = base64.b64encode(b"\0" * 32).decode()
    with pytest.raises(NexoSecurityError):
        ac.open_secured(tampered, ADYEN_KEY, ac.DerivedKey.derive(ADYEN_KEY.passphrase))
    other_key = ac.AdyenKey("SomeOtherKey", 1, ADYEN_KEY.passphrase)
    with pytest.raises(NexoSecurityError):
        ac.open_secured(sealed, other_key, ac.DerivedKey.derive(other_key.passphrase))


@pytest.mark.parametrize(
    ("name", "wrap"),
    [
        ("adyen-payment-sync-success.json", False),
        ("adyen-sale-to-poi-response-diagnosis.json", True),
        ("adyen-sale-to-poi-response-transaction-status.json", True),
    ],
)
def test_adyen_clear_messages_parse_without_loss(name: str, wrap: bool) -> None:
    raw = load(name)
    obj = {"SaleToPOIResponse": raw} if wrap else raw
    message = codec_json.from_obj(obj)
    assert json.loads(codec_json.dumps(codec_json.to_obj(message))) == obj


@pytest.mark.parametrize(
    ("name", "body"),
    [("adyen-abort-request.json", "AbortRequest"), ("adyen-login-request.json", "LoginRequest")],
)
def test_adyen_request_bodies_parse_without_loss(name: str, body: str) -> None:
    raw = load(name)
    parsed = codec_json.body_from_obj(body, raw)
    assert json.loads(codec_json.dumps(codec_json.body_to_obj(parsed))) == raw


def test_adyen_payment_amount_is_exact() -> None:
    message = codec_json.decode((DATA / "adyen-payment-sync-success.json").read_bytes())
    assert isinstance(message.body, nm.PaymentResponse)
    result = message.body.payment_result
    assert result is not None and result.amounts_resp is not None
    assert isinstance(result.amounts_resp.authorized_amount, Decimal)


def _payment(amount: str = "12.34") -> nm.Message:
    header = MessageHeader(
        MessageClass.SERVICE, MessageCategory.PAYMENT, MessageType.REQUEST, "S", "P", "3.1", "42"
    )
    body = nm.PaymentRequest(
        SaleData(TransactionIdentification("t", "2026-01-01T00:00:00Z")),
        nm.PaymentTransaction(AmountsReq("EUR", Decimal(amount))),
        nm.PaymentData(payment_type=PaymentType.FIRST_RESERVATION),
    )
    return nm.Message(header, body)


@pytest.mark.parametrize("wire", [Wire("xml"), Wire("adyen-json"), Wire("adyen-json", ADYEN_KEY)])
def test_round_trip_in_every_encoding(wire: Wire) -> None:
    message = _payment("0.10")
    assert wire.decode(wire.encode(message, b"\x01" * 16)) == message


@pytest.mark.parametrize(
    "xml",
    [
        b"<SaleToPOIResponse/>",
        b"<Foo><MessageHeader/></Foo>",
        b'<!DOCTYPE x [<!ENTITY a "b">]><SaleToPOIRequest/>',
        b"not xml",
        b'<?xml version="1.0" encoding="no-such-codec"?><SaleToPOIRequest/>',  # found by fuzzing
        # category does not match the body
        b'<SaleToPOIResponse><MessageHeader MessageClass="Service" MessageCategory="Reversal" '
        b'MessageType="Response" SaleID="S" POIID="P"/><LogoutResponse><Response Result="Success"/>'
        b"</LogoutResponse></SaleToPOIResponse>",
        # Result missing
        b'<SaleToPOIResponse><MessageHeader MessageClass="Service" MessageCategory="Logout" '
        b'MessageType="Response" SaleID="S" POIID="P"/><LogoutResponse><Response/>'
        b"</LogoutResponse></SaleToPOIResponse>",
        # unknown Result value
        b'<SaleToPOIResponse><MessageHeader MessageClass="Service" MessageCategory="Logout" '
        b'MessageType="Response" SaleID="S" POIID="P"/><LogoutResponse><Response Result="Maybe"/>'
        b"</LogoutResponse></SaleToPOIResponse>",
        # ServiceID longer than 10
        b'<SaleToPOIResponse><MessageHeader MessageClass="Service" MessageCategory="Logout" '
        b'MessageType="Response" SaleID="S" POIID="P" ServiceID="12345678901"/><LogoutResponse>'
        b'<Response Result="Success"/></LogoutResponse></SaleToPOIResponse>',
    ],
)
def test_strict_xml_parsing_raises_typed_errors(xml: bytes) -> None:
    with pytest.raises(NexoFormatError):
        codec_xml.decode(xml)


def test_amounts_are_decimal_never_float() -> None:
    with pytest.raises(NexoFormatError):  # a JSON string where a number belongs
        codec_json.decode(
            codec_json.encode(_payment()).replace(
                b'"RequestedAmount":12.34', b'"RequestedAmount":"12.34"'
            )
        )
    decoded = codec_xml.decode(codec_xml.encode(_payment("0.30")))
    assert isinstance(decoded.body, nm.PaymentRequest)
    assert decoded.body.payment_transaction.amounts_req.requested_amount == Decimal("0.30")


def test_full_card_number_is_refused() -> None:
    from drivers.nexo.model import CardData

    with pytest.raises(NexoFormatError):
        CardData(masked_pan="5413330000000010")


def test_elements_out_of_schema_order_are_refused() -> None:
    good = codec_xml.encode(_payment())
    head, _, rest = good.partition(b"<PaymentRequest>")
    body, _, tail = rest.partition(b"</PaymentRequest>")
    sale, _, after_sale = body.partition(b"</SaleData>")
    reordered = (
        head + b"<PaymentRequest>" + after_sale + sale + b"</SaleData></PaymentRequest>" + tail
    )
    with pytest.raises(NexoFormatError, match="order"):
        codec_xml.decode(reordered)
