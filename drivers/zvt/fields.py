"""ZVT field encodings (PA00P015 ch. 2 "Bitmaps", ch. 9 "TLV container"): pure functions.

BCD packs two decimal digits per byte, most significant first. LLVAR/LLLVAR prefixes are
``Fx Fy [Fz]`` = decimal length. BMPs are one byte of tag then a value whose length the BMP
number implies. TLV (inside BMP 06) uses BER tags (multi-byte when the low 5 bits are all
set) and BER lengths (``81 nn``, ``82 hh ll``). Every decoder says where and why it failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from drivers.zvt.errors import ZvtDecodeError

# ---- BCD ---------------------------------------------------------------------------------


def bcd_encode(value: int, size: int) -> bytes:
    digits = f"{value:0{size * 2}d}"
    if value < 0 or len(digits) > size * 2:
        raise ValueError(f"{value} does not fit in {size} BCD bytes")
    return bytes.fromhex(digits)


def bcd_decode(data: bytes, where: str = "BCD") -> int:
    text = data.hex()
    if not text.isdigit():
        raise ZvtDecodeError(where, f"not BCD: {data.hex(' ')}")
    return int(text) if text else 0


def bcd_digits(data: bytes) -> str:
    """BCD nibbles as text, keeping E (masked digit) and dropping F (padding) — for PANs."""
    return data.hex().upper().rstrip("F").replace("E", "*")


# ---- LLVAR / LLLVAR -----------------------------------------------------------------------


def llvar_prefix(length: int, digits: int) -> bytes:
    text = f"{length:0{digits}d}"
    if len(text) != digits:
        raise ValueError(f"length {length} does not fit an L{'L' * digits}VAR prefix")
    return bytes(0xF0 | int(d) for d in text)


def read_llvar(
    data: bytes, pos: int, digits: int, where: str, number: int | None = None
) -> tuple[bytes, int]:
    """The value after an L(L)LVAR length at ``pos``; ``number`` names the BMP in errors."""
    end = pos + digits
    if end > len(data):
        raise ZvtDecodeError(
            _where(where, number, pos), f"truncated L{'L' * digits}VAR length at offset {pos}"
        )
    length = 0
    for b in data[pos:end]:
        if b >> 4 != 0xF or b & 0xF > 9:
            problem = f"bad L{'L' * digits}VAR length byte {b:02X} at offset {pos}"
            raise ZvtDecodeError(_where(where, number, pos), problem)
        length = length * 10 + (b & 0xF)
    if end + length > len(data):
        raise ZvtDecodeError(
            _where(where, number, pos), f"value of {length} bytes runs past the end at offset {end}"
        )
    return data[end : end + length], end + length


def _where(where: str, number: int | None, pos: int) -> str:
    return where if number is None else f"{where} BMP {number:02X} at offset {pos - 1}"


# ---- BMPs ------------------------------------------------------------------------------


class Kind(Enum):
    BINARY = "binary"  # fixed length, binary or ASCII
    BCD = "bcd"  # fixed length, packed BCD
    LLVAR = "llvar"
    LLLVAR = "lllvar"
    TLV = "tlv"  # BMP 06: BER length, TLV objects


@dataclass(frozen=True, slots=True)
class BmpSpec:
    name: str
    kind: Kind
    size: int = 0  # for fixed kinds


# PA00P015 ch. 2: the BMPs the EV flow meets, with their length rules.
BMPS: dict[int, BmpSpec] = {
    0x01: BmpSpec("timeout", Kind.BINARY, 1),
    0x02: BmpSpec("max_status_infos", Kind.BINARY, 1),
    0x03: BmpSpec("service_byte", Kind.BINARY, 1),
    0x04: BmpSpec("amount", Kind.BCD, 6),
    0x05: BmpSpec("pump_number", Kind.BINARY, 1),
    0x06: BmpSpec("tlv", Kind.TLV),
    0x0B: BmpSpec("trace_number", Kind.BCD, 3),
    0x0C: BmpSpec("time", Kind.BCD, 3),
    0x0D: BmpSpec("date", Kind.BCD, 2),
    0x0E: BmpSpec("expiry_date", Kind.BCD, 2),
    0x17: BmpSpec("card_sequence_number", Kind.BCD, 2),
    0x19: BmpSpec("payment_type", Kind.BINARY, 1),
    0x22: BmpSpec("pan", Kind.LLVAR),
    0x23: BmpSpec("track_2", Kind.LLVAR),
    0x24: BmpSpec("track_3", Kind.LLLVAR),
    0x27: BmpSpec("result_code", Kind.BINARY, 1),
    0x29: BmpSpec("terminal_id", Kind.BCD, 4),
    0x2A: BmpSpec("vu_number", Kind.BINARY, 15),
    0x2D: BmpSpec("track_1", Kind.LLVAR),
    0x2E: BmpSpec("sync_chip_data", Kind.LLLVAR),
    0x37: BmpSpec("original_trace", Kind.BCD, 3),
    0x3A: BmpSpec("cvv", Kind.BINARY, 2),
    0x3B: BmpSpec("aid", Kind.BINARY, 8),
    0x3C: BmpSpec("additional_text", Kind.LLLVAR),
    0x3D: BmpSpec("password", Kind.BCD, 3),
    0x49: BmpSpec("currency", Kind.BCD, 2),
    0x4C: BmpSpec("blocked_goods_groups", Kind.LLVAR),
    0x60: BmpSpec("single_totals", Kind.LLLVAR),
    0x87: BmpSpec("receipt_number", Kind.BINARY, 2),  # BCD, but FFFF is a sentinel
    0x88: BmpSpec("turnover_number", Kind.BCD, 3),
    0x8A: BmpSpec("card_type", Kind.BINARY, 1),
    0x8B: BmpSpec("card_name", Kind.LLVAR),
    0x8C: BmpSpec("card_type_network", Kind.BINARY, 1),
    0x9A: BmpSpec("geldkarte_records", Kind.LLLVAR),
    0xA0: BmpSpec("result_code_as", Kind.BINARY, 1),
    0xA7: BmpSpec("chip_data", Kind.LLVAR),
    0xAA: BmpSpec("date_yymmdd", Kind.BCD, 3),
    0xAF: BmpSpec("ef_info", Kind.LLLVAR),
    0xBA: BmpSpec("aid_parameter", Kind.BINARY, 5),
    0xD0: BmpSpec("algorithm_key", Kind.BINARY, 1),
    0xD1: BmpSpec("card_offset", Kind.LLVAR),
    0xD2: BmpSpec("card_output_direction", Kind.BINARY, 1),
    0xD3: BmpSpec("dukpt_key_id", Kind.BINARY, 1),
    0xE0: BmpSpec("min_input_length", Kind.BINARY, 1),
    **{0xE0 + n: BmpSpec(f"text2_line{n}", Kind.LLVAR) for n in range(1, 9)},
    0xE9: BmpSpec("max_input_length", Kind.BINARY, 1),
    0xEA: BmpSpec("echo_input", Kind.BINARY, 1),
    0xEB: BmpSpec("mac", Kind.BINARY, 8),
    0xF0: BmpSpec("display_duration", Kind.BINARY, 1),
    **{0xF0 + n: BmpSpec(f"text1_line{n}", Kind.LLVAR) for n in range(1, 9)},
    0xF9: BmpSpec("beep_tones", Kind.BINARY, 1),
    0xFA: BmpSpec("card_reader_activation", Kind.BINARY, 1),
    0xFB: BmpSpec("ok_required", Kind.BINARY, 1),
    0xFC: BmpSpec("dialog_control", Kind.BINARY, 1),
    0xFD: BmpSpec("display_device", Kind.BINARY, 1),
}
# BCD-coded LLVARs that may carry E (masked digit) and F (padding) nibbles: no digit check.
_MASKED_BCD = {0x22, 0x23, 0x24}


class Bmp(NamedTuple):
    """One BMP-tagged field. An unknown BMP number cannot be measured, so it keeps the rest
    of the APDU as its value (nothing is dropped; the PT would answer it with 84 83).

    A named tuple, not a dataclass: a status information carries a dozen or more of these
    and building them is most of what decoding costs."""

    number: int
    value: bytes

    @property
    def known(self) -> bool:
        return self.number in BMPS


# The decoder's per-tag table: (length kind, fixed size), one dict lookup per BMP.
_FIXED, _BCD, _LLVAR, _LLLVAR, _TLV = range(5)  # LLVAR and LLLVAR: their count of length digits
_KIND_CODE = {
    Kind.BINARY: _FIXED,
    Kind.BCD: _BCD,
    Kind.LLVAR: _LLVAR,
    Kind.LLLVAR: _LLLVAR,
    Kind.TLV: _TLV,
}
# A list by tag number: an index is cheaper than a dict lookup, once per BMP.
_LAYOUT: list[tuple[int, int] | None] = [
    (_KIND_CODE[BMPS[n].kind], BMPS[n].size) if n in BMPS else None for n in range(256)
]
_LL_PREFIX = [llvar_prefix(n, 2) for n in range(100)]
_LLL_PREFIX = [llvar_prefix(n, 3) for n in range(1000)]
_LL_DIGITS = bytes(range(0xF0, 0xFA))
_BCD_BYTES = bytes(16 * hi + lo for hi in range(10) for lo in range(10))


def encode_bmps(bmps: tuple[Bmp, ...] | list[Bmp]) -> bytes:
    out = bytearray()
    for number, value in bmps:
        layout = _LAYOUT[number]
        out.append(number)
        if layout is not None:
            kind, size = layout
            n = len(value)
            if kind <= _BCD:
                if n != size:
                    raise ValueError(f"BMP {number:02X} ({BMPS[number].name}) takes {size} bytes")
            elif kind == _LLVAR:
                out += _LL_PREFIX[n] if n < 100 else llvar_prefix(n, 2)
            elif kind == _LLLVAR:
                out += _LLL_PREFIX[n] if n < 1000 else llvar_prefix(n, 3)
            else:
                out += ber_length(n)
        out += value
    return bytes(out)


def decode_bmps(data: bytes, pos: int = 0, where: str = "BMPs") -> tuple[Bmp, ...]:
    """Walk the BMPs by the per-tag table with slices. Lengths, BCD digits and the TLV
    container's structure are checked here, so a message that decodes is whole; the typed
    values are read only when a view asks for them."""
    bmps: list[Bmp] = []
    add = bmps.append
    end = len(data)
    layouts = _LAYOUT
    new = tuple.__new__  # Bmp(number, value) without the named tuple's Python-level __new__
    while pos < end:
        number = data[pos]
        layout = layouts[number]
        start = pos
        pos += 1
        if layout is None:
            add(new(Bmp, (number, data[pos:])))
            break
        kind, size = layout
        if kind <= _BCD:
            stop = pos + size
            if stop > end:
                raise ZvtDecodeError(
                    _at(where, number, start), f"needs {size} bytes, only {end - pos} left"
                )
            value = data[pos:stop]
            if kind and value.translate(None, _BCD_BYTES):
                raise ZvtDecodeError(_at(where, number, start), f"not BCD: {value.hex(' ')}")
            pos = stop
        elif kind != _TLV:  # LLVAR or LLLVAR: the kind code is the number of length digits
            head = data[pos : pos + kind]  # F1 F5 -> "f1f5"[1::2] -> 15
            valid = len(head) == kind and not head.translate(None, _LL_DIGITS)
            stop = pos + kind + (int(head.hex()[1::2]) if valid else end)
            if stop > end:
                read_llvar(data, pos, kind, where, number)  # raises, saying what is wrong
            value, pos = data[pos + kind : stop], stop
        else:
            length, pos = read_ber_length(data, pos, where)
            value = data[pos : pos + length]
            if len(value) != length:
                raise ZvtDecodeError(
                    _at(where, number, start), f"TLV container of {length} bytes runs past the end"
                )
            check_tlv(value, _at(where, number, start))
            pos += length
        add(new(Bmp, (number, value)))
    return tuple(bmps)


def _at(where: str, number: int, pos: int) -> str:
    return f"{where} BMP {number:02X} at offset {pos}"


# ---- TLV (BER) ---------------------------------------------------------------------------


def ber_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    if length <= 0xFF:
        return bytes([0x81, length])
    if length <= 0xFFFF:
        return bytes([0x82, length >> 8, length & 0xFF])
    raise ValueError(f"TLV length {length} exceeds 65535")


def read_ber_length(data: bytes, pos: int, where: str, tag: int | None = None) -> tuple[int, int]:
    """The BER length at ``pos`` and the offset after it; ``tag`` names the object in errors."""
    if pos < len(data):
        first = data[pos]
        if first < 0x80:
            return first, pos + 1
        size = first - 0x80
        if size in (1, 2) and pos + 1 + size <= len(data):
            return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size
    at = where if tag is None else f"{where} tag {tag:X}"
    if pos >= len(data):
        raise ZvtDecodeError(at, f"missing length at offset {pos}")
    if data[pos] in (0x81, 0x82):
        raise ZvtDecodeError(at, f"truncated length at offset {pos}")
    raise ZvtDecodeError(at, f"invalid BER length byte {data[pos]:02X} at offset {pos}")


def tag_bytes(tag: int) -> bytes:
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def is_constructed(tag: int, feig_ff_primitive: bool = False) -> bool:
    first = tag_bytes(tag)[0]
    if feig_ff_primitive and first == 0xFF:
        return False  # Feig uses FFxx tags as leaf values
    return bool(first & 0x20)


@dataclass(frozen=True, slots=True)
class Tlv:
    """A data object. A constructed tag holds ``children``; a primitive tag holds ``value``."""

    tag: int
    value: bytes = b""
    children: tuple[Tlv, ...] = ()

    def find(self, tag: int) -> Tlv | None:
        return find_tlv(self.children, tag)


def find_tlv(objects: tuple[Tlv, ...], tag: int) -> Tlv | None:
    for obj in objects:
        if obj.tag == tag:
            return obj
    return None


def encode_tlv(objects: tuple[Tlv, ...] | list[Tlv]) -> bytes:
    out = bytearray()
    for obj in objects:
        content = encode_tlv(obj.children) if obj.children else obj.value
        out += tag_bytes(obj.tag) + ber_length(len(content)) + content
    return bytes(out)


def _read_tag(data: bytes, pos: int, where: str) -> tuple[int, int]:
    start = pos
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        while True:
            if pos >= len(data):
                raise ZvtDecodeError(where, f"truncated multi-byte tag at offset {start}")
            byte = data[pos]
            tag = (tag << 8) | byte
            pos += 1
            if not byte & 0x80:
                break
            if pos - start > 4:
                raise ZvtDecodeError(where, f"tag longer than 4 bytes at offset {start}")
    return tag, pos


def _walk_tlv(data: bytes, where: str) -> list[tuple[int, int, bytes]]:
    """(tag, constructed by its first byte, content) of each object at this level; the only
    place a TLV container can be malformed (a constructed object whose content does not parse
    is kept as a leaf, never an error)."""
    found: list[tuple[int, int, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        first = data[pos]
        tag, pos = _read_tag(data, pos, where)
        length, pos = read_ber_length(data, pos, where, tag)
        stop = pos + length
        if stop > end:
            raise ZvtDecodeError(
                f"{where} tag {tag:X}", f"value of {length} bytes runs past the end at offset {pos}"
            )
        found.append((tag, first, data[pos:stop]))
        pos = stop
    return found


def check_tlv(data: bytes, where: str = "TLV") -> None:
    """Raise ZvtDecodeError where ``decode_tlv`` would, without building the objects."""
    _walk_tlv(data, where)


def decode_tlv(
    data: bytes, where: str = "TLV", *, feig_ff_primitive: bool = False
) -> tuple[Tlv, ...]:
    objects: list[Tlv] = []
    for tag, first, content in _walk_tlv(data, where):
        constructed = first & 0x20 and not (feig_ff_primitive and first == 0xFF)
        if constructed and content:
            try:
                children = decode_tlv(
                    content, f"{where} tag {tag:X}", feig_ff_primitive=feig_ff_primitive
                )
            except ZvtDecodeError:
                # A vendor using a constructed-looking tag as a leaf (Feig's FFxx): keep the bytes.
                objects.append(Tlv(tag, content))
            else:
                objects.append(Tlv(tag, children=children))
        else:
            objects.append(Tlv(tag, content))
    return tuple(objects)
