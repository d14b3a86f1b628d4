"""Whatever a POI sends, the codecs answer with a nexo error, never another exception."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DriverError
from drivers.nexo import codec_json, codec_xml
from drivers.nexo import messages as nm
from drivers.nexo.adyen_crypto import AdyenKey
from drivers.nexo.model import (
    AmountsResp,
    MessageCategory,
    MessageClass,
    MessageHeader,
    MessageType,
    POIData,
    Response,
    Result,
    SaleData,
    TransactionIdentification,
)
from drivers.nexo.wire import Wire

_TID = TransactionIdentification("T1", "2026-01-01T00:00:00Z")
REPLY = nm.Message(
    MessageHeader(
        MessageClass.SERVICE, MessageCategory.PAYMENT, MessageType.RESPONSE, "S", "P", "3.1", "9"
    ),
    nm.PaymentResponse(
        Response(Result.SUCCESS),
        SaleData(_TID),
        POIData(_TID),
        nm.PaymentResult(amounts_resp=AmountsResp(Decimal("12.34"), "EUR")),
    ),
)
XML = codec_xml.encode(REPLY)
JSON = codec_json.encode(REPLY)


def _decodes_or_nexo_error(wire: Wire, data: bytes) -> None:
    with contextlib.suppress(DriverError):
        wire.decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    for wire in (Wire("xml"), Wire("adyen-json"), Wire("adyen-json", AdyenKey("k", 1, "p"))):
        _decodes_or_nexo_error(wire, data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(XML) - 1), st.binary(min_size=1, max_size=4))
def test_mutated_xml(at: int, junk: bytes) -> None:
    _decodes_or_nexo_error(Wire("xml"), XML[:at] + junk + XML[at + len(junk) :])


_JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_json_with_a_value_replaced(data: st.DataObject) -> None:
    obj = json.loads(JSON)
    paths: list[list[str]] = []

    def walk(node: object, path: list[str]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append([*path, k])
                walk(v, [*path, k])

    walk(obj, [])
    path = data.draw(st.sampled_from(paths))
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = data.draw(_JSON_VALUES)
    _decodes_or_nexo_error(Wire("adyen-json"), json.dumps(obj).encode())
