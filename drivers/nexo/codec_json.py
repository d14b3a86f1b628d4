"""nexo in JSON as Adyen's Terminal API writes it: the same model, attributes and elements both
become keys, repeated elements become arrays, an element's own text is ``"Text"``.

Numbers are read as ``Decimal`` (``parse_float``) and written back digit for digit, so an amount
never passes through a float. Unknown keys are kept verbatim in ``extra``.
"""

from __future__ import annotations

import enum
import json
from decimal import Decimal
from typing import Any

from drivers.nexo.binding import (
    Extra,
    build,
    check_envelope,
    has_extra,
    scalar_from_json,
    slots_of,
)
from drivers.nexo.errors import NexoFormatError
from drivers.nexo.messages import BODIES, Message, is_request_body
from drivers.nexo.model import MessageHeader

CONTENT_TYPE = "application/json"
MAX_JSON_BYTES = 256 * 1024


def loads(data: bytes, where: str = "json") -> Any:
    if len(data) > MAX_JSON_BYTES:
        raise NexoFormatError(where, f"{len(data)} bytes is more than {MAX_JSON_BYTES}")
    try:
        return json.loads(data, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NexoFormatError(where, f"not JSON: {exc}") from None


def dumps(value: Any) -> str:
    """JSON text with ``Decimal`` written exactly (the stdlib encoder refuses Decimal)."""
    if isinstance(value, Decimal):
        return format(value, "f") if value == value.to_integral_value() else str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def encode(message: Message) -> bytes:
    return dumps(to_obj(message)).encode()


def to_obj(message: Message) -> dict[str, Any]:
    return {
        message.root: {
            "MessageHeader": _to_json(message.header),
            type(message.body).__name__: _to_json(message.body),
        }
    }


def decode(data: bytes) -> Message:
    return from_obj(loads(data))


def from_obj(obj: Any) -> Message:
    if not isinstance(obj, dict) or len(obj) != 1:
        raise NexoFormatError("json", "expected one SaleToPOIRequest or SaleToPOIResponse")
    ((root, inner),) = obj.items()
    if root not in ("SaleToPOIRequest", "SaleToPOIResponse") or not isinstance(inner, dict):
        raise NexoFormatError("json", f"root {root!r} is not SaleToPOIRequest/Response")
    if "MessageHeader" not in inner:
        raise NexoFormatError(root, "MessageHeader is missing")
    rest = [k for k in inner if k != "MessageHeader"]
    if len(rest) != 1:
        raise NexoFormatError(root, f"expected exactly one body, got {rest}")
    (body_name,) = rest
    if body_name not in BODIES:
        raise NexoFormatError(root, f"unsupported body {body_name!r}")
    if root.endswith("Request") != is_request_body(body_name):
        raise NexoFormatError(root, f"{body_name} in {root}")
    header = _from_json(MessageHeader, inner["MessageHeader"], "MessageHeader")
    cls, category = BODIES[body_name]
    check_envelope(root, header, body_name, category)
    return Message(header, _from_json(cls, inner[body_name], body_name))


def _to_json(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for slot in slots_of(type(obj)):
        value = getattr(obj, slot.attr)
        if value is None or (slot.many and not value):
            continue
        key = "Text" if slot.kind == "content" else slot.nexo
        if slot.kind == "elem":
            out[key] = _to_json(value)
        elif slot.kind == "elems":
            out[key] = [_to_json(v) for v in value]
        elif slot.many:
            out[key] = [_scalar(v) for v in value]
        else:
            out[key] = _scalar(value)
    for extra in getattr(obj, "extra", ()):
        if extra.encoding == "json":
            out[extra.name] = json.loads(extra.raw, parse_float=Decimal)
    return out


def _scalar(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _from_json(cls: type, obj: Any, where: str) -> Any:
    if not isinstance(obj, dict):
        raise NexoFormatError(where, "expected an object")
    values: dict[str, Any] = {}
    known: set[str] = set()
    for slot in slots_of(cls):
        key = "Text" if slot.kind == "content" else slot.nexo
        known.add(key)
        if key not in obj:
            continue
        raw = obj[key]
        here = f"{where}.{key}"
        if slot.kind == "elem":
            values[slot.attr] = _from_json(slot.target, raw, here)
        elif slot.many:
            if not isinstance(raw, list):
                raise NexoFormatError(here, "expected an array")
            values[slot.attr] = tuple(
                _from_json(slot.target, v, here)
                if slot.kind == "elems"
                else scalar_from_json(here, slot.target, v)
                for v in raw
            )
        else:
            values[slot.attr] = scalar_from_json(here, slot.target, raw)
    unknown = [Extra(k, dumps(v), "json") for k, v in obj.items() if k not in known]
    if unknown:
        if not has_extra(cls):
            raise NexoFormatError(where, f"unexpected {', '.join(x.name for x in unknown)}")
        values["extra"] = tuple(unknown)
    return build(cls, where, values)


def body_from_obj(body_name: str, obj: Any) -> Any:
    """One body without its envelope (Adyen's mocks keep some that way)."""
    if body_name not in BODIES:
        raise NexoFormatError("json", f"unsupported body {body_name!r}")
    return _from_json(BODIES[body_name][0], obj, body_name)


def body_to_obj(body: Any) -> dict[str, Any]:
    return _to_json(body)
