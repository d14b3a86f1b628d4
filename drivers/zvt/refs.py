"""A ZVT hold's reference for the engine: its receipt number (BMP 87) as decimal text.

The engine names holds by opaque text (``drivers.base``); ZVT names them by a four-digit BCD
receipt number. This is the one place that converts: ``str(int)`` without padding going out,
and back only for a text that is such a number (anything else is not a ZVT hold); and the one
place that pads, for display only (``display_ref``: the slip's 0042).
"""

from __future__ import annotations

from typing import overload

from drivers.errors import UnknownReference

MAX_RECEIPT = 9999  # BMP 87: two BCD bytes


@overload
def hold_ref(receipt: int) -> str: ...
@overload
def hold_ref(receipt: None) -> None: ...
def hold_ref(receipt: int | None) -> str | None:
    return None if receipt is None else str(receipt)


@overload
def display_ref(receipt: int) -> str: ...
@overload
def display_ref(receipt: None) -> None: ...
def display_ref(receipt: int | None) -> str | None:
    """The receipt number as the terminal prints it (four digits, BMP 87's width): what a driver
    or a CPO finds on the slip. Shown beside the ref, never used to name a hold."""
    return None if receipt is None else f"{receipt:04d}"


def receipt_number(ref: str) -> int:
    """The receipt number a reference names; ``UnknownReference`` for text that is none."""
    if not (ref.isascii() and ref.isdigit()) or int(ref) > MAX_RECEIPT or ref != str(int(ref)):
        raise UnknownReference(f"{ref!r} is not a ZVT receipt number")
    return int(ref)
