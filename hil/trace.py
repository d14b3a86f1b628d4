"""A bench run's byte trace, in the format of tests/data/zvt-real-traces/traces.json.

Every APDU the driver sends or receives during a HIL run becomes one record: direction, the
exact bytes, the scenario it belongs to, and ``expect`` -- what the decoder read from it at
capture time. Those expectations are a baseline, not the truth: before a record becomes a golden
test, the technician checks them against what the terminal showed and printed (hil/README.md).

Card data never reaches the file: the PAN (BMP 22) keeps its first 6 and last 4 digits, track
data (BMPs 23, 24, 2D) has every digit replaced by 0, and such records say ``masked_by_us``, as
the real-trace set does. The masked bytes still decode and re-encode exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.zvt import messages as m
from drivers.zvt.constants import Command
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import Bmp

_TRACK_BMPS = (0x23, 0x24, 0x2D)
_MAX_RECORDS = 5000  # a bench run is a few hundred APDUs; beyond this the run is stuck: stop


def _mask_pan(value: bytes) -> bytes:
    digits = value.hex()
    count = len(digits.rstrip("f"))
    keep = {i for i in range(count) if i < 6 or i >= count - 4}
    return bytes.fromhex(
        "".join(c if i in keep or not c.isdigit() else "e" for i, c in enumerate(digits))
    )


def _mask_track(value: bytes) -> bytes:
    return bytes.fromhex("".join("0" if c.isdigit() else c for c in value.hex()))


def mask(message: m.Message) -> tuple[m.Message, bool]:
    """The message with its card data masked, and whether anything was."""
    changed = False
    bmps = []
    for bmp in message.bmps:
        value = bmp.value
        if bmp.number == 0x22:
            value = _mask_pan(value)
        elif bmp.number in _TRACK_BMPS:
            value = _mask_track(value)
        changed = changed or value != bmp.value
        bmps.append(Bmp(bmp.number, value))
    return m.Message(message.command, message.prefix, tuple(bmps), message.charset), changed


def expectations(message: m.Message) -> dict[str, Any]:
    """What the decoder read: the fields golden tests check (tests/zvt/test_real_traces.py)."""
    found: dict[str, Any] = {"command": f"{message.command:04X}"}
    views: dict[str, Any] = {
        "result_code": message.result_code,
        "amount_minor": message.amount,
        "currency": message.currency,
        "receipt_no": message.receipt_number,
        "trace_no": message.trace_number,
        "terminal_id": message.terminal_id,
        "card_name": message.card_name,
        "masked_pan": message.masked_pan,
    }
    if message.command == Command.INTERMEDIATE_STATUS:
        views["intermediate_status"] = message.intermediate_status
    if message.command == Command.COMPLETION:
        views["terminal_status"] = message.terminal_status
        views["software_version"] = message.software_version
        views["status_byte"] = message.status_byte
    if message.command == Command.PRINT_LINE and message.print_line is not None:
        views["print_text"] = message.print_line[1]
    found.update({k: v for k, v in views.items() if v is not None})
    return found


@dataclass
class TraceRecorder:
    """Collects the APDUs of one run; ``tap`` is given to the driver's client."""

    device: str
    profile: str
    charset: str = m.DEFAULT_CHARSET
    scenario: str = "setup"
    records: list[dict[str, Any]] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))

    def tap(self, direction: str, raw: bytes) -> None:
        if len(self.records) >= _MAX_RECORDS:
            return
        try:
            message = m.decode(raw, self.charset)
        except ZvtDecodeError as exc:
            self._add(direction, raw, {"command": raw[:2].hex().upper()}, str(exc), masked=False)
            return
        masked, changed = mask(message)
        self._add(direction, masked.to_apdu().encode(), expectations(masked), None, changed)

    def _add(
        self, direction: str, raw: bytes, expect: dict[str, Any], error: str | None, masked: bool
    ) -> None:
        record: dict[str, Any] = {
            "id": f"hil-{self.profile}-{self.started}-{len(self.records) + 1:03d}",
            "direction": direction,
            "layer": "apdu",
            "hex": raw.hex(),
            "device": self.device,
            "provenance": f"HIL bench capture (hil/runner.py), scenario {self.scenario}",
            "source": {"bench": self.started, "license": "own capture"},
            "meaning": f"{self.scenario}: {expect['command']} (to be confirmed at the bench)",
            "expect": expect,
        }
        if error is not None:
            record["expect_error"] = True
            record["notes"] = f"did not decode at capture: {error}"
        if masked:
            record["masked_by_us"] = True
        if self.charset != m.DEFAULT_CHARSET:
            record["charset"] = self.charset
        self.records.append(record)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.records, indent=1) + "\n", encoding="utf-8")
