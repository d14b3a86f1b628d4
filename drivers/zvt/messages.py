"""ZVT messages: builders for every command the charging flow needs, and typed views.

A ``Message`` is a command code, the positional fields some commands carry before their
BMPs (password, config byte, result code …) and the BMPs in wire order. ``decode`` and
``encode`` are exact inverses; unknown BMPs and TLV tags are kept. The typed properties
read BMPs on demand. Card data never leaves this module unmasked: ``masked_pan`` gives
first 6 and last 4, track data has no accessor, and ``repr`` hides BMPs 22/23/24/2D.

One module per side, every name importable from here (``from drivers.zvt import messages as
m``): ``message_view`` (a message and what it says), ``ecr_commands`` (what we send),
``pt_answers`` (what a terminal answers: the simulator's side) and
``bmp_values`` (the BMPs both carry).
"""

from __future__ import annotations

from drivers.zvt.bmp_values import (
    bmp_amount,
    bmp_bcd,
    bmp_currency,
    bmp_date,
    bmp_llvar,
    bmp_receipt,
    bmp_time,
    pan_bmp,
)
from drivers.zvt.charset import DEFAULT_CHARSET
from drivers.zvt.ecr_commands import (
    abort,
    authorization,
    book_total,
    diagnosis,
    display_text,
    end_of_day,
    enquire_open_preauths,
    is_password,
    log_off,
    partial_reversal,
    pre_auth_reversal,
    pre_authorisation,
    print_text_block,
    read_card,
    reference_tlv,
    refund,
    registration,
    repeat_receipt,
    reversal,
    status_enquiry,
)
from drivers.zvt.message_view import CARD_TYPES, TOTALS_GROUPS, Message, Totals, decode
from drivers.zvt.pt_answers import (
    abort_pt,
    ack,
    completion,
    intermediate,
    nack,
    print_line,
    status_completion,
    status_information,
)

__all__ = [
    "CARD_TYPES",
    "DEFAULT_CHARSET",
    "Message",
    "TOTALS_GROUPS",
    "Totals",
    "abort",
    "abort_pt",
    "ack",
    "authorization",
    "bmp_amount",
    "bmp_bcd",
    "bmp_currency",
    "bmp_date",
    "bmp_llvar",
    "bmp_receipt",
    "bmp_time",
    "book_total",
    "completion",
    "decode",
    "diagnosis",
    "display_text",
    "end_of_day",
    "enquire_open_preauths",
    "intermediate",
    "is_password",
    "log_off",
    "nack",
    "pan_bmp",
    "partial_reversal",
    "pre_auth_reversal",
    "pre_authorisation",
    "print_line",
    "print_text_block",
    "read_card",
    "reference_tlv",
    "refund",
    "registration",
    "repeat_receipt",
    "reversal",
    "status_completion",
    "status_enquiry",
    "status_information",
]
