"""decode(encode(x)) == x for every layer; random or truncated bytes raise only ZvtDecodeError."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.zvt import messages as m
from drivers.zvt.apdu import Apdu, ApduReader
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import (
    BMPS,
    Bmp,
    Kind,
    Tlv,
    decode_bmps,
    decode_tlv,
    encode_bmps,
    encode_tlv,
)
from drivers.zvt.serial_framing import FrameDecoder, FrameReceived, frame

apdus = st.builds(
    Apdu,
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=600) | st.binary(min_size=250, max_size=300),
)


@given(apdus)
def test_apdu_roundtrip(apdu: Apdu) -> None:
    assert Apdu.decode(apdu.encode()) == apdu


@given(st.lists(apdus, max_size=5), st.data())
def test_apdu_reader_reassembles_any_split(apdu_list: list[Apdu], data: st.DataObject) -> None:
    stream = b"".join(a.encode() for a in apdu_list)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader, out, last = ApduReader(), [], 0
    for cut in [*cuts, len(stream)]:
        out += reader.feed(stream[last:cut])
        last = cut
    assert out == apdu_list and reader.pending == 0


def _bmp_value(number: int) -> st.SearchStrategy[bytes]:
    spec = BMPS[number]
    if spec.kind is Kind.BINARY:
        return st.binary(min_size=spec.size, max_size=spec.size)
    if spec.kind is Kind.BCD:
        return st.integers(0, 10 ** (2 * spec.size) - 1).map(
            lambda v: bytes.fromhex(f"{v:0{2 * spec.size}d}")
        )
    if spec.kind is Kind.LLVAR:
        return st.binary(max_size=99)
    if spec.kind is Kind.LLLVAR:
        return st.binary(max_size=300)
    return tlvs.map(encode_tlv)


primitive_tags = st.sampled_from(
    [0x07, 0x08, 0x14, 0x1F10, 0x1F62, 0x1F63, 0x43, 0x9F5A, 0xDF01, 0x1F8000]
)
constructed_tags = st.sampled_from([0x23, 0x24, 0x25, 0x60, 0xE4, 0xE9, 0xFF01])
tlvs = st.recursive(
    st.lists(st.builds(Tlv, primitive_tags, st.binary(max_size=140)), max_size=4).map(tuple),
    lambda inner: st.lists(
        st.one_of(
            st.builds(Tlv, primitive_tags, st.binary(max_size=40)),
            st.builds(
                lambda tag, kids: Tlv(tag, children=kids), constructed_tags, inner.filter(bool)
            ),
        ),
        max_size=4,
    ).map(tuple),
    max_leaves=12,
)


@given(tlvs)
def test_tlv_roundtrip(objects: tuple[Tlv, ...]) -> None:
    assert decode_tlv(encode_tlv(objects)) == objects


bmps = st.lists(
    st.sampled_from(sorted(BMPS)).flatmap(lambda n: _bmp_value(n).map(lambda v: Bmp(n, v))),
    max_size=8,
)


@given(bmps)
def test_bmp_roundtrip(fields: list[Bmp]) -> None:
    assert decode_bmps(encode_bmps(fields)) == tuple(fields)


@given(bmps, st.binary(max_size=20))
def test_unknown_bmp_keeps_the_rest(fields: list[Bmp], tail: bytes) -> None:
    raw = encode_bmps(fields) + b"\x7e" + tail  # 7E: not a BMP we know
    decoded = decode_bmps(raw)
    assert decoded[-1] == Bmp(0x7E, tail) and encode_bmps(decoded) == raw


@given(st.sampled_from([0x040F, 0x0622, 0x0623, 0x0624, 0x0625]), bmps)
def test_message_roundtrip(command: int, fields: list[Bmp]) -> None:
    message = m.Message(command, b"", tuple(fields))
    assert m.Message.from_apdu(message.to_apdu()) == message


completion_bmps = st.lists(
    st.sampled_from([0x27, 0x0C, 0xAA, 0x19, 0x29, 0x49, 0x06]).flatmap(
        lambda n: _bmp_value(n).map(lambda v: Bmp(n, v))
    ),
    max_size=6,
)


@given(completion_bmps)
def test_completion_roundtrip(fields: list[Bmp]) -> None:
    """06 0F carries the BMPs the spec lists for a completion (PA00P015 06 0F)."""
    message = m.completion(fields)
    assert m.Message.from_apdu(message.to_apdu()) == message


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-;", max_size=60), st.integers(0, 255)
)
def test_status_completion_roundtrip(version: str, status: int) -> None:
    message = m.status_completion(version, status)
    decoded = m.Message.from_apdu(message.to_apdu())
    assert (
        decoded == message
        and decoded.software_version == version
        and decoded.terminal_status == status
    )


@given(st.binary(max_size=300))
def test_frame_roundtrip_byte_by_byte(apdu: bytes) -> None:
    decoder = FrameDecoder()
    events = [e for b in frame(apdu) for e in decoder.feed(bytes([b]))]
    assert events == [FrameReceived(apdu)]


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_frame_found_after_line_noise(noise: bytes, apdu: bytes) -> None:
    clean = noise.replace(b"\x10", b"").replace(b"\x06", b"").replace(b"\x15", b"")
    events = FrameDecoder().feed(clean + frame(apdu))
    assert events[-1] == FrameReceived(apdu)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_zvt_decode_error(raw: bytes) -> None:
    for decode in (m.decode, Apdu.decode, decode_tlv, decode_bmps):
        with contextlib.suppress(ZvtDecodeError):
            decode(raw)
    FrameDecoder().feed(raw)  # never raises: it reports bad frames as events


@settings(max_examples=300)
@given(
    st.sampled_from(
        [c[1] for c in __import__("tests.zvt.test_golden", fromlist=["ECR_COMMANDS"]).ECR_COMMANDS]
    ),
    st.data(),
)
def test_truncated_messages_only_raise_zvt_decode_error(
    message: m.Message, data: st.DataObject
) -> None:
    raw = message.to_apdu().encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    broken = bytearray(raw[:cut])
    if len(broken) >= 3:
        broken[2] = min(len(broken) - 3, 0xFE)  # keep the APDU length consistent, cut the fields
    with contextlib.suppress(ZvtDecodeError):
        m.decode(bytes(broken))
