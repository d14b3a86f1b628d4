"""ZVT field encodings (PA00P015 ch. 2 "Bitmaps", ch. 9 "TLV container"): pure functions.

BCD packs two decimal digits per byte, most significant first. LLVAR/LLLVAR prefixes are
``Fx Fy [Fz]`` = decimal length. BMPs are one byte of tag then a value whose length the BMP
number implies. TLV (inside BMP 06) uses BER tags (multi-byte when the low 5 bits are all
set) and BER lengths (``81 nn``, ``82 hh ll``). Every decoder says where and why it failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

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


def read_llvar(data: bytes, pos: int, digits: int, where: str) -> tuple[bytes, int]:
    end = pos + digits
    if end > len(data):
        raise ZvtDecodeError(where, f"truncated L{'L' * digits}VAR length at offset {pos}")
    length = 0
    for b in data[pos:end]:
        if b >> 4 != 0xF or b & 0xF > 9:
            raise ZvtDecodeError(where, f"bad L{'L' * digits}VAR length byte {b:02X} at offset {pos}")
        length = length * 10 + (b & 0xF)
    if end + length > len(data):
        raise ZvtDecodeError(where, f"value of {length} bytes runs past the end at offset {end}")
    return data[end : end + length], end + length


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


@dataclass(frozen=True, slots=True)
class Bmp:
    """One BMP-tagged field. An unknown BMP number cannot be measured, so it keeps the rest
    of the APDU as its value (nothing is dropped; the PT would answer it with 84 83)."""

    number: int
    value: bytes

    @property
    def known(self) -> bool:
        return self.number in BMPS


def encode_bmps(bmps: tuple[Bmp, ...] | list[Bmp]) -> bytes:
    out = bytearray()
    for bmp in bmps:
        spec = BMPS.get(bmp.number)
        out.append(bmp.number)
        if spec is None:
            out += bmp.value
        elif spec.kind in (Kind.BINARY, Kind.BCD):
            if len(bmp.value) != spec.size:
                raise ValueError(f"BMP {bmp.number:02X} ({spec.name}) takes {spec.size} bytes")
            out += bmp.value
        elif spec.kind is Kind.LLVAR:
            out += llvar_prefix(len(bmp.value), 2) + bmp.value
        elif spec.kind is Kind.LLLVAR:
            out += llvar_prefix(len(bmp.value), 3) + bmp.value
        else:
            out += ber_length(len(bmp.value)) + bmp.value
    return bytes(out)


def decode_bmps(data: bytes, pos: int = 0, where: str = "BMPs") -> tuple[Bmp, ...]:
    bmps: list[Bmp] = []
    while pos < len(data):
        number = data[pos]
        at = f"{where} BMP {number:02X} at offset {pos}"
        spec = BMPS.get(number)
        pos += 1
        if spec is None:
            bmps.append(Bmp(number, data[pos:]))
            break
        if spec.kind in (Kind.BINARY, Kind.BCD):
            value = data[pos : pos + spec.size]
            if len(value) != spec.size:
                raise ZvtDecodeError(at, f"needs {spec.size} bytes, only {len(value)} left")
            if spec.kind is Kind.BCD:
                bcd_decode(value, at)
            pos += spec.size
        elif spec.kind in (Kind.LLVAR, Kind.LLLVAR):
            value, pos = read_llvar(data, pos, 2 if spec.kind is Kind.LLVAR else 3, at)
        else:
            length, pos = read_ber_length(data, pos, at)
            value = data[pos : pos + length]
            if len(value) != length:
                raise ZvtDecodeError(at, f"TLV container of {length} bytes runs past the end")
            decode_tlv(value, at)  # validate now; views decode again when asked
            pos += length
        bmps.append(Bmp(number, value))
    return tuple(bmps)


# ---- TLV (BER) ---------------------------------------------------------------------------


def ber_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    if length <= 0xFF:
        return bytes([0x81, length])
    if length <= 0xFFFF:
        return bytes([0x82, length >> 8, length & 0xFF])
    raise ValueError(f"TLV length {length} exceeds 65535")


def read_ber_length(data: bytes, pos: int, where: str) -> tuple[int, int]:
    if pos >= len(data):
        raise ZvtDecodeError(where, f"missing length at offset {pos}")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if first in (0x81, 0x82):
        size = first - 0x80
        if pos + 1 + size > len(data):
            raise ZvtDecodeError(where, f"truncated length at offset {pos}")
        return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size
    raise ZvtDecodeError(where, f"invalid BER length byte {first:02X} at offset {pos}")


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


def decode_tlv(data: bytes, where: str = "TLV", *, feig_ff_primitive: bool = False) -> tuple[Tlv, ...]:
    objects: list[Tlv] = []
    pos = 0
    while pos < len(data):
        tag, pos = _read_tag(data, pos, where)
        at = f"{where} tag {tag:X}"
        length, pos = read_ber_length(data, pos, at)
        content = data[pos : pos + length]
        if len(content) != length:
            raise ZvtDecodeError(at, f"value of {length} bytes runs past the end at offset {pos}")
        pos += length
        if is_constructed(tag, feig_ff_primitive) and content:
            try:
                children = decode_tlv(content, at, feig_ff_primitive=feig_ff_primitive)
            except ZvtDecodeError:
                # A vendor using a constructed-looking tag as a leaf (Feig's FFxx): keep the bytes.
                objects.append(Tlv(tag, content))
            else:
                objects.append(Tlv(tag, children=children))
        else:
            objects.append(Tlv(tag, content))
    return tuple(objects)
