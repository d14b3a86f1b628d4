"""Walk JSON text by its structure without parsing it: for a nesting limit checked before a
parser recurses (OCPI bodies), and for finding where an object ends when ``|`` may stand
inside its strings (OCMF records)."""

from __future__ import annotations

from collections.abc import Iterator


def brackets(text: str, start: int = 0) -> Iterator[tuple[int, int]]:
    """(index, nesting depth after it) of every bracket outside a string, from ``start``."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            yield i, depth
        elif ch in "]}":
            depth -= 1
            yield i, depth
