"""What real terminals do differently, for the simulator to play (``SimConfig.variants``).

Each field is one behaviour measured in a real trace or read in another implementation
(docs/ZVT-VARIANTS.md has the table and where each came from). The defaults play the ZVT
specification as written, so a simulator without variants is the spec's terminal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from drivers.zvt.charset import DEFAULT_CHARSET


@dataclass(slots=True)
class Variants:
    # -- text ---------------------------------------------------------------------------------
    # The set the terminal prints and displays in (CardComplete: iso-8859-1), and whether its
    # text blocks announce it (TLV 14).
    charset: str = DEFAULT_CHARSET
    announce_charset: bool = False
    # Printed first on every receipt: a title with non-ASCII letters shows the set in use.
    receipt_title: str | None = None
    # CardComplete: every 06 D1 carries a TLV (1F07 receipt type) after its text, and the
    # receipt ends with an empty line of attribute 81.
    print_line_tlv: bool = False
    # -- status enquiry (05 01) ----------------------------------------------------------------
    # False: the completion is the status byte alone (``06 0F 01 DC``), as a Worldline VALINA
    # answers; the status is what the terminal reports (00 ready, DC card inserted ...).
    status_version: bool = True
    terminal_status: int = 0x00
    # -- refusals ------------------------------------------------------------------------------
    # Raw APDUs that answer the next commands instead of 80 00 (``84 1E 01 7D``, CCV IM30).
    refusals: deque[bytes] = field(default_factory=deque)
    # -- a command that arrives while the PT is master (it is running a sequence) -------------
    # "nack": refused at once with 84 9C (busy), the sequence goes on -- what this simulator
    # always did; "ignore": not answered at all, so the ECR's T3 runs out. docs/ZVT-VARIANTS.md.
    command_while_master: Literal["nack", "ignore"] = "nack"
    # -- the positive acknowledgement of a command: 80 00 00, or 84 00 00 ("negative
    # acknowledgement, no error"), which Portalum.Zvt accepts as an alternative.
    positive_ack: Literal["8000", "8400"] = "8000"
    # -- duplicate detection: the PT numbers its messages (TLV 1F73 in each 04 0F); a 04 0F
    # sent again keeps its number.
    sequence_numbers: bool = False
    # -- reservation extension (top-up): the 04 0F's amount (BMP 04) is the amount just added
    # ("increment") or the reservation's new total ("total").
    topup_amount: Literal["increment", "total"] = "increment"
    # -- card first: after a read card (06 C0) the pre-authorisation uses the card just read
    # (False), or the PT asks for the card again, 04 FF 0A "insert card" (True).
    reask_card: bool = False
    # -- end of day (06 50): BMP 60 counts each card group's payments in ONE binary byte (the
    # spec's individual totals; EVerest's `SingleAmounts` types it u8; ecrterm, Portalum.Zvt and
    # kotlin-zvt-library keep BMP 60 opaque). Nothing read says what a terminal sends past 255:
    # a one-byte counter (or the low byte of a wider one) wraps ("wrap", 300 is sent as 44 --
    # the default), a terminal that saturates sends 255 ("cap"). The turnover (6 bytes BCD)
    # stays exact either way. docs/ZVT-VARIANTS.md, section 6.
    totals_count: Literal["wrap", "cap"] = "wrap"
    # -- open pre-auth enquiry (06 23 87 FF FF): "list" answers 06 1E B8 with BMP 87 (the first
    # open receipt, FF FF when none: a Feig cVEND's capture) and TLV 23 listing them all; "bare"
    # answers 06 1E 01 B8 with no field at all -- the bytes a failed booking of an unknown
    # receipt ends with, which list nothing. docs/ZVT-VARIANTS.md, section 7.
    open_preauth_answer: Literal["list", "bare"] = "list"
