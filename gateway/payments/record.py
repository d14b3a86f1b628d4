"""A session as plain JSON for the store, and back — derived from the dataclasses in one place.

The codec (``encode``/``decode``) walks the dataclasses' fields and type hints: enums are their
values, datetimes ISO text, tuples lists, and the small value records in ``AS_ROWS`` arrays (as
they always were stored). A session is stored as one flat object: its core fields and the
fields of its parts side by side (field names are unique across parts: ``model.PART_OF``), with
the derived money view (``VIEW``) for readers of the row (CLI, reconciliation, SQL queries).

Rows of earlier versions load: the flat shape is the one they were written in (a new field
is simply absent and takes its default); rows written before holds were a list (one
``receipt_no`` and ``authorized_minor``) become a one-hold session; rows written before
references were text (0013) have their integer receipt numbers read as text; compacted rows
(archived, defaults left out) fill in their defaults. Meter readings are kept by the store in
their own table (``meter_readings``, migration 0010) and handed back under ``readings``; older
rows carry them inline under the same key.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import MISSING, fields, is_dataclass
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

from gateway.fiscal.receipt import VatLine
from gateway.payments.events import LastResult
from gateway.payments.model import PARTS, Hold, HoldStatus, Reading, Session
from gateway.payments.states import State

# Small value records stored as arrays, in field order: [at, energy_wh, trusted], ...
AS_ROWS: frozenset[type] = frozenset({Reading, VatLine, LastResult})

# The money view, derived from the holds and refunds: written for readers of the row, never read.
VIEW = (
    "authorized_minor",
    "captured_minor",
    "released_minor",
    "open_minor",
    "ref",
    "refunded_minor",
)


Codec = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


_HINTS: dict[type, dict[str, Any]] = {}


def encoder(tp: Any) -> Codec:
    code = _ENCODERS.get(tp)
    if code is None:
        code = _ENCODERS[tp] = _encoder(tp)
    return code


def decoder(tp: Any) -> Codec:
    code = _DECODERS.get(tp)
    if code is None:
        code = _DECODERS[tp] = _decoder(tp)
    return code


_ENCODERS: dict[Any, Codec] = {}  # built once per type: the store writes a session every step
_DECODERS: dict[Any, Codec] = {}


def _encoder(tp: Any) -> Codec:
    """How a value of type ``tp`` becomes JSON: enums are their values, datetimes ISO text,
    tuples lists, dataclasses objects — or arrays, in field order, for ``AS_ROWS``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        (inner,) = (a for a in get_args(tp) if a is not type(None))
        code = encoder(inner)
        return _same if code is _same else lambda v: None if v is None else code(v)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = encoder(args[0])
            return list if item is _same else lambda v: [item(x) for x in v]
        codes = [encoder(a) for a in args]
        return lambda v: [code(x) for code, x in zip(codes, v, strict=True)]
    if origin is dict:
        return dict
    if isinstance(tp, type) and is_dataclass(tp):
        hints = _hints(tp)
        named = [(f.name, encoder(hints[f.name])) for f in fields(tp)]
        if tp in AS_ROWS:
            return lambda v: [code(getattr(v, name)) for name, code in named]
        return lambda v: {name: code(getattr(v, name)) for name, code in named}
    if isinstance(tp, type) and issubclass(tp, Enum):
        return lambda v: v.value
    if tp is datetime:
        return lambda v: v.isoformat()
    return _same


def _decoder(tp: Any) -> Codec:
    """``encoder(tp)`` undone."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        (inner,) = (a for a in get_args(tp) if a is not type(None))
        code = decoder(inner)
        return _same if code is _same else lambda v: None if v is None else code(v)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = decoder(args[0])
            return tuple if item is _same else lambda v: tuple(item(x) for x in v)
        codes = [decoder(a) for a in args]
        return lambda v: tuple(code(x) for code, x in zip(codes, v, strict=True))
    if origin is dict:
        return dict
    if isinstance(tp, type) and is_dataclass(tp):
        return _object_decoder(tp)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp
    if tp is datetime:
        return datetime.fromisoformat
    return _same


def _object_decoder(cls: type) -> Codec:
    """A dataclass from its object (absent keys take their defaults) or, for ``AS_ROWS``, its
    array. Fields stored as they are (numbers, text) are copied without a call: a store reads
    every open session often."""
    hints = _hints(cls)
    named = [(f.name, decoder(hints[f.name])) for f in fields(cls)]
    if cls in AS_ROWS:
        if any(f.kw_only for f in fields(cls)):
            # a row written before a field was added ends early: the rest take their defaults
            return lambda v: cls(**{n: code(x) for (n, code), x in zip(named, v, strict=False)})
        codes = [code for _, code in named]
        return lambda v: cls(*[code(x) for code, x in zip(codes, v, strict=True)])
    plain = [n for n, code in named if code is _same]
    coded = [(n, code) for n, code in named if code is not _same]

    def decode_object(v: dict[str, Any]) -> Any:
        values = {n: v[n] for n in plain if n in v}
        for n, code in coded:
            if n in v:
                values[n] = code(v[n])
        return cls(**values)

    return decode_object


def encode(value: Any) -> Any:
    """A dataclass (or any value of its fields' types) as JSON values."""
    return encoder(type(value))(value)


def decode(tp: Any, value: Any) -> Any:
    return decoder(tp)(value)


def to_json(s: Session) -> dict[str, Any]:
    """One flat object: the core's fields, each part's fields beside them, the money view."""
    out: dict[str, Any] = {}
    for name, code in _session_fields():
        if name in PARTS:
            out.update(code(getattr(s, name)))
        else:
            out[name] = code(getattr(s, name))
    out.update({name: getattr(s, name) for name in VIEW})
    return out


def from_json(d: dict[str, Any]) -> Session:
    d = _refs_as_text(d)
    core: dict[str, Any] = {}
    for name, code in _session_decoders():
        if name in PARTS:
            core[name] = code(d)  # its fields, side by side in the row
        elif name == "holds":
            core["holds"] = _holds(d)
        elif name in d:
            core[name] = code(d[name])
    return Session(**core)


@cache
def _session_decoders() -> tuple[tuple[str, Codec], ...]:
    hints = _hints(Session)
    return tuple(
        (f.name, decoder(PARTS[f.name] if f.name in PARTS else hints[f.name]))
        for f in fields(Session)
    )


@cache
def _session_fields() -> tuple[tuple[str, Codec], ...]:
    hints = _hints(Session)
    return tuple((f.name, encoder(hints[f.name])) for f in fields(Session))


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _renamed(item: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in item.items() if k not in _OLD_NAMES}
    for old, new in _OLD_NAMES.items():
        if old in item:
            out[new] = _text(item[old])
    return out


_OLD_NAMES = {"receipt_no": "ref", "booking_receipt": "booking_ref"}


def _refs_as_text(d: dict[str, Any]) -> dict[str, Any]:
    """A row written before migration 0013 (or by a version before it) names holds, bookings
    and refunds by ZVT's integer receipt number (``receipt_no``, ``booking_receipt``): the
    same row with text references under today's names (``str(int)``, as 0013 writes them).
    A row of today is returned as it is."""
    holds, refunds = d.get("holds") or (), d.get("refunds") or ()
    held: Any = d.get("held_result")
    old_held = isinstance(held, list) and len(held) > 1 and isinstance(held[1], int)
    if not (
        "receipt_no" in d
        or old_held
        or any("receipt_no" in h for h in holds)
        or any("receipt_no" in r for r in refunds)
    ):
        return d
    out = _renamed(d)
    if "holds" in d:
        out["holds"] = [_renamed(h) for h in holds]
    if "refunds" in d:
        out["refunds"] = [_renamed(r) for r in refunds]
    if old_held:
        out["held_result"] = [held[0], _text(held[1]), *held[2:]]
    return out


def _holds(d: dict[str, Any]) -> tuple[Hold, ...]:
    """The holds; a row from before holds were a list has one (from its receipt and amount)."""
    if "holds" in d:
        return decode(tuple[Hold, ...], d["holds"])  # type: ignore[no-any-return]
    if d.get("ref") is None:
        return ()
    captured, released, held = d["captured_minor"], d["released_minor"], d["authorized_minor"]
    status = HoldStatus.OPEN
    if captured + released == held and State(d["state"]) in (State.COMPLETED, State.VOIDED):
        status = HoldStatus.CAPTURED if captured else HoldStatus.RELEASED
    elif State(d["state"]) in (State.CAPTURE_FAILED, State.RELEASE_FAILED):
        status, captured, released = HoldStatus.LAPSED, 0, 0
    return (Hold(d["ref"], held, None, None, captured, released, status),)


def _defaults() -> dict[str, Any]:
    """What each field holds when it says nothing, as JSON (from the dataclasses' defaults)."""
    out: dict[str, Any] = {"open_minor": 0, "refunded_minor": 0}
    for cls in (Session, *PARTS.values()):
        hints = _hints(cls)
        for f in fields(cls):
            if f.name in PARTS or f.name in _ALWAYS_KEPT:
                continue
            if f.default is not MISSING:
                out[f.name] = encoder(hints[f.name])(f.default)
            elif f.default_factory is not MISSING:
                out[f.name] = encoder(hints[f.name])(f.default_factory())
    return out


# Kept in an archived row even when they say nothing: its readers (reconciliation, the CLI)
# read them without a default, and ``holds`` tells a row of today from one of before the list.
_ALWAYS_KEPT = frozenset({"holds", "hold_minor", "price_minor", "reference"})

# What a field holds when it says nothing: ``compact`` leaves such fields out of an archived
# session's row, and ``from_json`` gives them back (the dataclasses' defaults).
DEFAULTS: dict[str, Any] = _defaults()


def compact(d: dict[str, Any]) -> dict[str, Any]:
    """An archived session's row: its meter readings dropped (priced and billed long ago; the
    full row went to the archive first) and every field that holds its default left out."""

    def said_nothing(key: str, value: Any) -> bool:
        default = DEFAULTS.get(key, ...)
        return type(value) is type(default) and value == default

    return {k: v for k, v in d.items() if k != "readings" and not said_nothing(k, v)}


def to_row(s: Session) -> tuple[dict[str, Any], tuple[tuple[str, int, bool], ...]]:
    """The session's row without its meter readings, and the readings as the store keeps them:
    one row each in the append-only ``meter_readings`` table (a step adds only the new ones)."""
    data = to_json(s)
    readings = data.pop("readings")
    return data, tuple((at, energy_wh, trusted) for at, energy_wh, trusted in readings)
