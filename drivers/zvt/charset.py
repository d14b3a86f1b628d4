"""Which character set a terminal's text is in: a per-terminal setting, or what it announces.

ZVT's default for display and receipt text is code page 437. Real terminals differ: Ingenico
terminals on the CardComplete network print ISO-8859-1 and cannot be configured otherwise
(Portalum.Zvt's README, "Known deviations"; the CardComplete trace prints "HÄNDLERBELEG" with
C4), while hobex terminals print CP437 (8E for Ä). So the set is a per-terminal setting
(``terminals.<name>.charset``) with the ZVT default, and where a message announces its set in
TLV tag 14 ("ISO character set": 01..10 = ISO-8859-n, FE = UTF-8, FF = the ZVT 8-bit set,
as ecrterm's ``CharacterSet`` reads the spec) the announcement wins for that message.

Decoding never fails on a stray byte: a receipt with one undecodable character must still be
printed and journalled, so undecodable bytes become U+FFFD.
"""

from __future__ import annotations

from typing import Literal

# The names a terminal's ``charset`` setting may take (Python codec names).
Charset = Literal["cp437", "iso-8859-1", "iso-8859-2", "iso-8859-15", "utf-8", "ascii"]
CHARSETS: tuple[str, ...] = ("cp437", "iso-8859-1", "iso-8859-2", "iso-8859-15", "utf-8", "ascii")
DEFAULT_CHARSET: Charset = "cp437"

ANNOUNCEMENT_TAG = 0x14  # TLV "ISO character set", one byte


def announced(code: int) -> str | None:
    """The codec a TLV 14 value names, or None for a value ZVT does not define."""
    if code == 0x00:
        return "ascii"
    if 0x01 <= code <= 0x10 and code != 0x0C:  # ISO-8859-12 does not exist
        return f"iso-8859-{code}"
    if code == 0xFE:
        return "utf-8"
    if code == 0xFF:
        return DEFAULT_CHARSET
    return None


def announcement_code(charset: str) -> int:
    """The TLV 14 value that announces ``charset`` (the simulator announces with it)."""
    if charset == "ascii":
        return 0x00
    if charset.startswith("iso-8859-"):
        return int(charset.removeprefix("iso-8859-"))
    if charset == "utf-8":
        return 0xFE
    return 0xFF


def decode_text(raw: bytes, charset: str) -> str:
    return raw.decode(charset, errors="replace")


def encode_text(text: str, charset: str) -> bytes:
    return text.encode(charset, errors="replace")
