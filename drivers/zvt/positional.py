"""Where the positional part of a ZVT APDU ends and its BMPs begin (PA00P016 ch. 2).

Most commands are BMPs only; some start with positional fields (password, config byte, result
code, status byte, print attribute and text). Real terminals add forms the spec's tables do not
show: a completion with the terminal status byte alone (``06 0F 01 DC``), a print line with a
TLV container after its text (CardComplete), a negative acknowledgement with a result byte
(``84 1E 01 7D``, CCV). Each rule here names the trace it comes from
(tests/data/zvt-real-traces).
"""

from __future__ import annotations

from drivers.zvt.constants import Command
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import BMPS, decode_bmps, encode_bmps, read_ber_length, read_llvar

PASSWORD_COMMANDS = frozenset(
    {
        Command.REVERSAL,
        Command.REFUND,
        Command.END_OF_DAY,
        Command.REPEAT_RECEIPT,
        0x0693,
        0x061B,
        0x0691,
    }
)


def prefix_size(command: int, data: bytes, where: str) -> int:
    n = len(data)
    if command == Command.REGISTRATION:
        if n < 4 or n == 5:
            raise ZvtDecodeError(
                where, "registration needs password, config byte and optional currency"
            )
        return 6 if n >= 6 else 4
    if command in PASSWORD_COMMANDS:
        if n < 3:
            raise ZvtDecodeError(where, "missing the 3-byte password")
        return 3
    if command == Command.STATUS_ENQUIRY:
        return 3 if n >= 3 else 0
    if command == Command.READ_CARD:
        return 1 if n >= 1 else 0
    if command == Command.ABORT_PT:
        if n < 1:
            raise ZvtDecodeError(where, "abort without a result code")
        return 3 if data[0] == 0x6F and n == 3 else 1
    if command == Command.INTERMEDIATE_STATUS:
        if n < 1:
            raise ZvtDecodeError(where, "intermediate status without a status byte")
        return min(n, 2)
    if command == Command.COMPLETION and n:
        return _completion_prefix_size(data, where)
    return 0


def _completion_prefix_size(data: bytes, where: str) -> int:
    """05 01's completion starts with a positional LLLVAR software version and the terminal
    status byte; a terminal told not to send the version (or choosing not to) sends the status
    byte alone. Other 06 0F start with BMPs (27, 0C, AA, 19, 29, 49, 06)."""
    if len(data) == 1:
        return 1  # one byte cannot be a BMP (every BMP has a value) nor a version: the status
    if data[0] >> 4 == 0xF:
        try:
            _version, end = read_llvar(data, 0, 3, f"{where} software version")
        except ZvtDecodeError:
            return 0
        return end + 1 if end < len(data) else 0
    if data[1] == 0x06 and (data[0] not in BMPS or not _parses(data, 0, where)):
        return 1 if _parses(data, 1, where) else 0  # the status, then a TLV container
    return 0


def _parses(data: bytes, pos: int, where: str) -> bool:
    try:
        decode_bmps(data, pos, where)
    except ZvtDecodeError:
        return False
    return True


def print_line_size(data: bytes) -> int:
    """06 D1 is attribute and text; some terminals (CardComplete) append a TLV container
    (06, BER length, 1F07 receipt type) after the text. The text never holds the control
    character 06, so the container is the first 06 whose BER length ends exactly at the end,
    whose content parses as TLV and which re-encodes to the same bytes."""
    pos = data.find(0x06, 1)
    while pos != -1:
        try:
            length, start = read_ber_length(data, pos + 1, "06 D1 TLV")
            if start + length == len(data) and encode_bmps(decode_bmps(data, pos)) == data[pos:]:
                return pos
        except (ZvtDecodeError, ValueError):
            pass
        pos = data.find(0x06, pos + 1)
    return len(data)


def nack_result(instr: int, data: bytes) -> int:
    """The result code of a negative acknowledgement. The spec's form is ``84 xx 00``: the
    code is INSTR. A CCV IM30 (after a firmware update) sends ``84 1E 01 7D``: INSTR 1E is
    the instruction of "abort" (06 1E) and the one data byte is its result code, exactly as
    CCV documents ``06 1E 01 7D`` (7D, communication error) for a failed initialisation. So
    ``84 1E`` with one byte gives that byte; any other INSTR is the code, data or not."""
    if instr == 0x1E and len(data) == 1:
        return data[0]
    return instr
