"""Golden tests from real terminals: every record in tests/data/zvt-real-traces/traces.json.

Each record is bytes a real terminal (or a real ECR) sent, with what its source says they mean.
Every record must decode to the stated fields (``expect``) and to what the bytes visibly carry
(``expect_visible``), re-encode byte for byte, and records marked ``expect_error`` must be
refused with ``ZvtDecodeError``. A new trace (for example one the HIL runner recorded on a bench,
see hil/README.md) is one more entry in the JSON file: no code changes.

The keys of ``expect`` map to the message views in ``EXPECT_VIEWS``; a key the table does not
know fails the test, so an expectation is never silently skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.zvt import messages as m
from drivers.zvt.apdu import Apdu, ApduReader
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import Tlv, find_tlv
from drivers.zvt.serial_framing import FrameDecoder, FrameReceived, frame

TRACES = Path(__file__).parent.parent / "data" / "zvt-real-traces" / "traces.json"
RECORDS: list[dict[str, Any]] = json.loads(TRACES.read_text(encoding="utf-8"))


def _tlv_at(objects: tuple[Tlv, ...], path: str) -> Tlv | None:
    """``A/B#2/C``: tag A, then the second B inside it, then C inside that."""
    found: Tlv | None = None
    level = objects
    for step in path.split("/"):
        tag_text, _, nth = step.partition("#")
        matches = [t for t in level if t.tag == int(tag_text, 16)]
        index = int(nth) - 1 if nth else 0
        if index >= len(matches):
            return None
        found = matches[index]
        level = found.children
    return found


def _check_tlv(msg: m.Message, want: dict[str, str]) -> None:
    for path, value in want.items():
        obj = _tlv_at(msg.tlv, path)
        assert obj is not None, f"TLV {path} missing"
        assert obj.value.hex() == value.lower(), f"TLV {path}"


def _check_tlv_text(msg: m.Message, want: dict[str, str]) -> None:
    for path, value in want.items():
        obj = _tlv_at(msg.tlv, path)
        assert obj is not None, f"TLV {path} missing"
        assert msg.text_of(obj.value) == value, f"TLV {path}"


def _check_bmp(msg: m.Message, want: dict[str, str]) -> None:
    for number, value in want.items():
        raw = msg.get(int(number, 16))
        assert raw is not None and raw.hex() == value.lower(), f"BMP {number}"


def _check_tlv_count(msg: m.Message, want: dict[str, int]) -> None:
    for tag, count in want.items():
        assert sum(1 for t in msg.tlv if t.tag == int(tag, 16)) == count, f"count of TLV {tag}"


def _text_contains(msg: m.Message, want: list[str]) -> None:
    text = "\n".join(msg.text_lines)
    for needle in want:
        assert needle in text


def _totals(msg: m.Message) -> dict[str, Any] | None:
    totals = msg.totals
    if totals is None:
        return None
    return {
        "first_receipt": totals.first_receipt,
        "last_receipt": totals.last_receipt,
        "groups": {name: [count, amount] for name, count, amount in totals.groups},
    }


def _bmp_text(msg: m.Message, want: dict[str, str]) -> None:
    for number, text in want.items():
        raw = msg.get(int(number, 16))
        assert raw is not None and msg.text_of(raw) == text, f"BMP {number}"


def _print_attribute(msg: m.Message) -> int | None:
    line = msg.print_line
    return None if line is None else line[0]


def _print_text(msg: m.Message) -> str | None:
    line = msg.print_line
    return None if line is None else line[1]


def _card_type_name(msg: m.Message) -> str | None:
    return None if msg.card_type is None else m.CARD_TYPES.get(msg.card_type)


def _time(msg: m.Message) -> str | None:
    return None if msg.tx_time is None else str(msg.tx_time)


def _date(msg: m.Message) -> list[int] | None:
    return None if msg.tx_date is None else list(msg.tx_date)


def _first_line(msg: m.Message) -> str | None:
    lines = msg.text_lines
    return lines[0] if lines else None


# expect key -> the view whose value must equal it
EXPECT_VIEWS: dict[str, Callable[[m.Message], Any]] = {
    "command": lambda msg: f"{msg.command:04X}",
    "result_code": lambda msg: msg.result_code,
    "terminal_id": lambda msg: msg.terminal_id,
    "amount_minor": lambda msg: msg.amount,
    "currency": lambda msg: msg.currency,
    "additional_text": lambda msg: msg.additional_text,
    "card_name": lambda msg: msg.card_name,
    "card_type": lambda msg: msg.card_type,
    "card_type_name": _card_type_name,
    "date": _date,
    "time": _time,
    "receipt_no": lambda msg: msg.receipt_number,
    "trace_no": lambda msg: msg.trace_number,
    "aid": lambda msg: msg.aid,
    "vu_number": lambda msg: msg.vu_number,
    "masked_pan": lambda msg: msg.masked_pan,
    "intermediate_status": lambda msg: msg.intermediate_status,
    "terminal_status": lambda msg: msg.terminal_status,
    "status_byte": lambda msg: msg.status_byte,
    "software_version": lambda msg: msg.software_version,
    "password": lambda msg: msg.password,
    "config_byte": lambda msg: msg.config_byte,
    "registration_currency": lambda msg: msg.registration_currency,
    "prefix": lambda msg: msg.prefix.hex(),
    "print_text": _print_text,
    "print_attribute": _print_attribute,
    "text_lines": lambda msg: msg.text_lines,
    "text_lines_count": lambda msg: len(msg.text_lines),
    "text_lines_first": _first_line,
    "open_preauths": lambda msg: msg.open_preauths,
    "totals": _totals,
    "data_len": lambda msg: len(msg.to_apdu().data),
}
# expect key -> a check that asserts itself
EXPECT_CHECKS: dict[str, Callable[[m.Message, Any], None]] = {
    "tlv": _check_tlv,
    "tlv_text": _check_tlv_text,
    "bmp": _check_bmp,
    "tlv_count": _check_tlv_count,
    "text_contains": _text_contains,
    "bmp_text": _bmp_text,
}
_STREAM_ONLY = frozenset({"apdus_after_each"})


def decode_record(record: dict[str, Any]) -> tuple[m.Message, bytes, Callable[[m.Message], bytes]]:
    """The message, the bytes it came from and how to re-encode it in the same layer."""
    charset = record.get("charset", m.DEFAULT_CHARSET)
    layer = record["layer"]
    if layer == "apdu":
        raw = bytes.fromhex(record["hex"])
        return m.decode(raw, charset=charset), raw, lambda msg: msg.to_apdu().encode()
    if layer == "apdu_data":
        command = int(record["command"], 16)
        raw = bytes.fromhex(record["data_hex"])
        apdu = Apdu(command >> 8, command & 0xFF, raw)
        return m.Message.from_apdu(apdu, charset=charset), raw, lambda msg: msg.to_apdu().data
    if layer == "serial_frame":
        raw = bytes.fromhex(record["hex"])
        events = FrameDecoder().feed(raw)
        assert len(events) == 1 and isinstance(events[0], FrameReceived), events
        msg = m.decode(events[0].apdu, charset=charset)
        return msg, raw, lambda msg: frame(msg.to_apdu().encode())
    if layer == "stream_chunks":
        reader = ApduReader()
        chunks = [bytes.fromhex(c) for c in record["chunks"]]
        counts, apdus = [], []
        for chunk in chunks:
            got = reader.feed(chunk)
            counts.append(len(got))
            apdus += got
        want = record["expect"].get("apdus_after_each")
        if want is not None:
            assert counts == want
        assert len(apdus) == 1 and reader.pending == 0
        msg = m.Message.from_apdu(apdus[0], charset=charset)
        return msg, b"".join(chunks), lambda msg: msg.to_apdu().encode()
    raise AssertionError(f"unknown layer {layer!r}")


def check_expect(msg: m.Message, expect: dict[str, Any]) -> None:
    for key, want in expect.items():
        if key in _STREAM_ONLY:
            continue
        if key in EXPECT_CHECKS:
            EXPECT_CHECKS[key](msg, want)
        elif key in EXPECT_VIEWS:
            assert EXPECT_VIEWS[key](msg) == want, key
        else:
            raise AssertionError(f"no view for expect key {key!r}: add one to EXPECT_VIEWS")


def _build(spec: dict[str, Any]) -> m.Message:
    """The builder call a record's ``build`` names, for ECR commands and the simulator's."""
    args = list(spec.get("args", []))
    kwargs = dict(spec.get("kwargs", {}))
    if "bmps" in spec:
        bmps = [(int(n, 16), bytes.fromhex(v)) for n, v in spec["bmps"]]
        kwargs["bmps"] = [m.bmp_llvar(n, v) for n, v in bmps]
    tlv: list[Tlv] = [Tlv(int(t, 16), bytes.fromhex(v)) for t, v in spec.get("tlv", [])]
    tlv += [
        Tlv(int(t, 16), children=tuple(Tlv(int(c, 16), bytes.fromhex(v)) for c, v in kids))
        for t, kids in spec.get("tlv_nested", [])
    ]
    if "reference" in spec:
        tlv.append(m.reference_tlv(*spec["reference"]))
    if tlv:
        kwargs["tlv"] = tlv
    builder: Callable[..., m.Message] = getattr(m, spec["fn"])
    return builder(*args, **kwargs)


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_real_trace(record: dict[str, Any]) -> None:
    if record.get("expect_error"):
        with pytest.raises(ZvtDecodeError):
            decode_record(record)
        return
    msg, raw, encode = decode_record(record)
    assert encode(msg) == raw, "re-encoding changed the bytes"
    check_expect(msg, record["expect"])
    check_expect(msg, record.get("expect_visible", {}))
    if "build" in record:
        assert _build(record["build"]).to_apdu().encode() == msg.to_apdu().encode()


def test_the_set_is_whole() -> None:
    """80 records from the five sources, unique ids: a lost or duplicated entry shows here."""
    ids = [r["id"] for r in RECORDS]
    assert len(ids) == len(set(ids)) >= 80
    assert {r["source"].get("repo") for r in RECORDS} >= {
        "EVerest/zvt",
        "Portalum/Portalum.Zvt",
        "wirelane/ecrterm",
        "bezahl-online/zvt",
    }


def test_the_tlv_path_reader() -> None:
    objects = (Tlv(0x62, children=(Tlv(0x60, children=(Tlv(0x43, b"\x01"),)),)),)
    assert _tlv_at(objects, "62/60/43") == Tlv(0x43, b"\x01")
    assert _tlv_at(objects, "62/60#2/43") is None
    assert find_tlv(objects, 0x99) is None
