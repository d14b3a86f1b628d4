"""One declaration, two encodings: a nexo class says, per field, its nexo name and whether it is
an XML attribute, a child element, a text element or the element's own text; the XML and the
JSON codec both read that, so the two encodings cannot drift apart.

Fields are declared in the schema's order, which is the order the XML encoder writes elements
in (the nexo XSD uses ``xs:sequence``). Anything the model does not know is kept verbatim in
``extra`` (and written back in the same encoding), never interpreted: "parse without loss"
without pretending to understand vendor additions.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from drivers.nexo.errors import NexoFormatError

Kind = Literal["attr", "elem", "elems", "text", "texts", "listtext", "content"]


@dataclass(frozen=True, slots=True)
class Extra:
    """An element or attribute outside the model, kept as its raw text in one encoding."""

    name: str
    raw: str  # XML: the element's serialisation (attributes: the value); JSON: the value as JSON
    encoding: Literal["xml", "xml-attr", "json"]


def nx(name: str, kind: Kind = "attr", default: Any = dataclasses.MISSING) -> Any:
    """A field bound to a nexo name; without ``default`` it is mandatory when parsing."""
    meta = {"nexo": name, "kind": kind}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def extras() -> Any:
    return field(default=(), metadata={"kind": "extra"})


@dataclass(frozen=True, slots=True)
class Slot:
    attr: str  # the Python field name
    nexo: str
    kind: Kind
    target: Any  # the scalar type, the nested dataclass, or the item type of a tuple
    required: bool
    many: bool  # a tuple: repeated elements, or a list-typed attribute/text


_SLOTS: dict[type, tuple[Slot, ...]] = {}  # bounded by the number of model classes


def slots_of(cls: type) -> tuple[Slot, ...]:
    known = _SLOTS.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    out: list[Slot] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("kind") in (None, "extra"):
            continue
        hint = hints[f.name]
        target = _unwrap(hint)
        many = typing.get_origin(hint) is tuple
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append(Slot(f.name, f.metadata["nexo"], f.metadata["kind"], target, required, many))
    _SLOTS[cls] = tuple(out)
    return _SLOTS[cls]


def _unwrap(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _unwrap(args[0])
    if origin is tuple:
        return _unwrap(typing.get_args(hint)[0])
    return hint


def has_extra(cls: type) -> bool:
    return any(f.name == "extra" for f in dataclasses.fields(cls))


# ---- scalars ---------------------------------------------------------------------------------


def scalar_from_text(where: str, target: Any, text: str) -> Any:
    """XML gives every scalar as text; convert to the declared type or refuse."""
    if target is str:
        return text
    if target is bool:
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise NexoFormatError(where, f"{text!r} is not a boolean")
    if target is int:
        if not text.isdigit():
            raise NexoFormatError(where, f"{text!r} is not a whole number")
        return int(text)
    if target is Decimal:
        return _decimal(where, text)
    if isinstance(target, type) and issubclass(target, enum.Enum):
        return _enum(where, target, text)
    raise NexoFormatError(where, f"no scalar conversion to {target!r}")


def scalar_from_json(where: str, target: Any, value: object) -> Any:
    """JSON carries types; a string where a number belongs (or the reverse) is refused."""
    if target is bool:
        if isinstance(value, bool):
            return value
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif target is Decimal:
        if isinstance(value, (Decimal, int)) and not isinstance(value, bool):
            return _decimal(where, str(value))
    elif isinstance(value, str):
        return scalar_from_text(where, target, value)
    raise NexoFormatError(
        where, f"{value!r} has the wrong JSON type for {getattr(target, '__name__', target)}"
    )


def scalar_to_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _decimal(where: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise NexoFormatError(where, f"{text!r} is not a decimal") from None
    if not value.is_finite():
        raise NexoFormatError(where, f"{text!r} is not a finite decimal")
    return value


def _enum(where: str, target: type[enum.Enum], text: str) -> enum.Enum:
    try:
        return target(text)
    except ValueError:
        known = ", ".join(str(m.value) for m in target)
        raise NexoFormatError(where, f"{text!r} is not one of {known}") from None


def build(cls: type, where: str, values: dict[str, Any]) -> Any:
    for slot in slots_of(cls):
        if slot.required and slot.attr not in values:
            raise NexoFormatError(where, f"{slot.nexo} is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise NexoFormatError(where, str(exc)) from None


def check_envelope(where: str, header: Any, body_name: str, category: Any) -> None:
    """The header must name the body's category, and a *Response body is a Response."""
    if header.message_category != category:
        raise NexoFormatError(
            where, f"MessageCategory {header.message_category} does not match {body_name}"
        )
    expected = "Response" if body_name.endswith("Response") else "Request"
    if body_name == "EventNotification":
        expected = "Notification"
    if header.message_type != expected:
        raise NexoFormatError(where, f"MessageType {header.message_type} with {body_name}")
