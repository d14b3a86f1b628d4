"""Bounds checked before a file or a text is parsed: what an operator's mistake or an attacker's
file must not turn into a hang, a MemoryError or a RecursionError.

A secret or config file is read only when it is a regular file (``/dev/zero`` never ends, a FIFO
nobody writes blocks forever), never beyond a size limit, and only as UTF-8 text. A TOML text is
scanned for its nesting depth and its longest dotted key before ``tomllib`` (which recurses per
level, and is quadratic in the parts of a dotted key) ever sees it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SECRET_BYTES = 64 * 1024  # a PEM key, a token or a password: far below this
MAX_CONFIG_BYTES = 1024 * 1024
MAX_TOML_DEPTH = 16  # arrays and inline tables; the settings need 4
MAX_KEY_PARTS = 64  # dots outside strings on one line (a dotted key, a table header)


class Refused(ValueError):
    """The file or text is not what it must be; the message says why, in one line."""


def read_text_file(path: Path, limit: int) -> str:
    """The UTF-8 text of the regular file at ``path`` (at most ``limit`` bytes). OSError when it
    cannot be opened; Refused when it is not a regular file, too large or not text."""
    # O_NONBLOCK: opening a FIFO nobody writes must not block before we can look at it
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused("not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > limit:
                raise Refused(f"larger than {limit} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("not UTF-8 text (a binary file?)") from None
    if "\x00" in text:
        raise Refused("not text (it holds NUL bytes)")
    return text


def check_toml_shape(text: str) -> None:
    """Refused when the TOML text nests deeper than MAX_TOML_DEPTH or a line holds more than
    MAX_KEY_PARTS dots outside strings: checked in one pass, before any parser recurses."""
    depth = dots = 0
    line_no = 1
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line_no, dots = line_no + 1, 0
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            end = _string_end(text, i + len(quote), quote)
            line_no += text.count("\n", i, end)
            i = end
            continue
        elif ch in "[{":
            depth += 1
            if depth > MAX_TOML_DEPTH:
                raise Refused(f"line {line_no}: nested deeper than {MAX_TOML_DEPTH} levels")
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == ".":
            dots += 1
            if dots > MAX_KEY_PARTS:
                raise Refused(f"line {line_no}: a key of more than {MAX_KEY_PARTS} parts")
        i += 1


def _string_end(text: str, start: int, quote: str) -> int:
    """The index just after the string opened by ``quote`` that starts at ``start``."""
    escapes = quote[0] == '"'
    i, n = start, len(text)
    while i < n:
        if escapes and text[i] == "\\":
            i += 2
            continue
        if text.startswith(quote, i):
            end = i + len(quote)
            if len(quote) == 3:  # TOML: up to two more quotes close a multi-line string
                while end < n and end - i < 5 and text[end] == quote[0]:
                    end += 1
            return end
        if len(quote) == 1 and text[i] == "\n":
            return i  # an unterminated one-line string: tomllib reports it
        i += 1
    return n
