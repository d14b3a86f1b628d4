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
    # "nack": refused at once with 84 9C (busy), the sequence goes on (Feig, the spec's PT);
    # "ignore": no answer at all, the ECR's T3 runs out (seen with terminals that read nothing
    # while they wait for the host).
    command_while_master: Literal["nack", "ignore"] = "nack"
    # -- duplicate detection (TLV 1F73, a running sequence number) -----------------------------
    # True: the PT puts its own number in each 04 0F (TLV 1F73) and a repeated 04 0F (our ACK
    # lost) carries the same number.
    sequence_numbers: bool = False
    # -- reservation extension (top-up): what the 04 0F's amount (BMP 04) is -------------------
    # "increment": the amount just added; "total": the reservation's new total.
    topup_amount: Literal["increment", "total"] = "increment"
    # -- card first: read card (06 C0), then the pre-authorisation ------------------------------
    # False: the pre-auth uses the card just read; True: the PT asks for the card again
    # (04 FF 0A "insert card") before it authorises.
    reask_card: bool = False
