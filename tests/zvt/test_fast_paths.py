"""The codec's fast paths agree with the slow ones they stand in for.

The frame decoder takes whole frames and runs of plain bytes as slices, and falls back to one
byte at a time across chunk boundaries: fed in any chunking it must say exactly what it says
byte by byte through its per-byte state machine. The CRC runs through ``binascii.crc_hqx`` with reflected bytes: it must equal a
bitwise CRC-16/KERMIT written from its definition. ``check_tlv`` must reject exactly what
``decode_tlv`` rejects, since BMP 06 is validated with it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import check_tlv, decode_tlv
from drivers.zvt.serial_framing import (
    MAX_FRAME_DATA,
    BadFrame,
    FrameDecoder,
    FrameReceived,
    crc16,
    frame,
)


def kermit_bitwise(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


@given(st.binary(max_size=300))
def test_crc_equals_the_bitwise_definition(data: bytes) -> None:
    assert crc16(data) == kermit_bitwise(data)


def _broken(apdu: bytes, how: int) -> bytes:
    framed = frame(apdu)
    if how == 0:
        return framed[:-1] + bytes([framed[-1] ^ 0xFF])  # CRC wrong
    if how == 1:
        return framed[: len(framed) // 2]  # cut off
    return framed[:3] + b"\x10\x41" + framed[3:]  # DLE followed by junk


pieces = st.one_of(
    st.binary(max_size=80).map(frame),
    st.binary(max_size=40).map(lambda b: frame(b.replace(b"\x01", b"\x10"))),  # many stuffed DLEs
    st.tuples(st.binary(max_size=40), st.integers(0, 2)).map(lambda t: _broken(*t)),
    st.binary(max_size=12),  # noise, ACKs, NAKs, stray DLEs
    st.sampled_from([b"\x06", b"\x15", b"\x10", b"\x10\x02", b"\x10\x03"]),
)


def _feed_all(chunks: list[bytes]) -> tuple[list[object], int]:
    decoder = FrameDecoder()
    events: list[object] = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events, decoder.noise


def _one_byte_at_a_time(stream: bytes) -> tuple[list[object], int]:
    """The reference: the decoder's per-byte state machine alone, which ``feed`` skips past."""
    decoder = FrameDecoder()
    events: list[object] = [event for byte in stream if (event := decoder._byte(byte)) is not None]
    return events, decoder.noise


@settings(max_examples=300)
@given(st.lists(pieces, max_size=8), st.data())
def test_any_chunking_says_what_byte_by_byte_says(parts: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    byte_by_byte = _one_byte_at_a_time(stream)
    assert _feed_all([stream]) == byte_by_byte
    assert _feed_all([bytes([b]) for b in stream]) == byte_by_byte
    assert _feed_all(chunks) == byte_by_byte


@pytest.mark.parametrize("stuffed_dle", ["none", "first", "last"])
@pytest.mark.parametrize("extra", [-1, 0, 1, 2, 10])
def test_an_overlong_frame_is_refused_the_same_in_any_chunking(
    extra: int, stuffed_dle: str
) -> None:
    plain = b"\x41" * (MAX_FRAME_DATA - 1 + extra)
    body = {"none": plain + b"\x41", "first": b"\x10\x10" + plain, "last": plain + b"\x10\x10"}[
        stuffed_dle
    ]
    stream = b"\x10\x02" + body + b"\x10\x03\x00\x00" + frame(b"\x80\x00\x00")
    reference = _one_byte_at_a_time(stream)
    assert _feed_all([stream]) == reference
    assert _feed_all([stream[i : i + 4096] for i in range(0, len(stream), 4096)]) == reference
    events = reference[0]
    assert events[-1] == FrameReceived(b"\x80\x00\x00")
    assert (events[0] == BadFrame("frame longer than the largest APDU")) is (extra > 0)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_check_tlv_rejects_what_decode_tlv_rejects(raw: bytes) -> None:
    try:
        decode_tlv(raw)
    except ZvtDecodeError:
        decoded = False
    else:
        decoded = True
    try:
        check_tlv(raw)
    except ZvtDecodeError:
        checked = False
    else:
        checked = True
    assert checked == decoded
