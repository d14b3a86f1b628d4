"""What the PT answers the ECR (the simulator's side): acknowledgements, completion, status
information, intermediate status and print lines."""

from __future__ import annotations

from collections.abc import Sequence

from drivers.zvt.bmp_values import _tlv
from drivers.zvt.charset import DEFAULT_CHARSET, encode_text
from drivers.zvt.constants import Command
from drivers.zvt.fields import Bmp, Tlv, bcd_encode, llvar_prefix
from drivers.zvt.message_view import Message


def ack() -> Message:
    return Message(Command.ACK)


def nack(code: int) -> Message:
    return Message(0x8400 | code)


def completion(bmps: Sequence[Bmp] = ()) -> Message:
    return Message(Command.COMPLETION, b"", tuple(bmps))


def status_completion(
    software_version: str | None, terminal_status: int, tlv: Sequence[Tlv] = ()
) -> Message:
    """05 01's answer; ``software_version=None`` is the form without it (``06 0F 01 DC``)."""
    if software_version is None:
        return Message(Command.COMPLETION, bytes([terminal_status]), tuple(_tlv(tlv)))
    raw = encode_text(software_version, DEFAULT_CHARSET)
    return Message(
        Command.COMPLETION,
        llvar_prefix(len(raw), 3) + raw + bytes([terminal_status]),
        tuple(_tlv(tlv)),
    )


def abort_pt(result_code: int, bmps: Sequence[Bmp] = ()) -> Message:
    return Message(Command.ABORT_PT, bytes([result_code]), tuple(bmps))


def intermediate(
    status: int, timeout_minutes: int | None = None, tlv: Sequence[Tlv] = ()
) -> Message:
    prefix = (
        bytes([status])
        if timeout_minutes is None
        else bytes([status]) + bcd_encode(timeout_minutes, 1)
    )
    return Message(Command.INTERMEDIATE_STATUS, prefix, tuple(_tlv(tlv)))


def status_information(bmps: Sequence[Bmp]) -> Message:
    return Message(Command.STATUS_INFORMATION, b"", tuple(bmps))


def print_line(
    attribute: int, text: str, tlv: Sequence[Tlv] = (), charset: str = DEFAULT_CHARSET
) -> Message:
    """06 D1; ``tlv`` (e.g. 1F07 receipt type) after the text, as CardComplete terminals send."""
    prefix = bytes([attribute]) + encode_text(text, charset)
    return Message(Command.PRINT_LINE, prefix, tuple(_tlv(tlv)), charset)
