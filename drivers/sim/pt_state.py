"""What the simulated PT is told (``SimConfig``: card outcomes, faults, the variants of real
terminals) and what it keeps (``SimState``: its transactions, receipts, what it was sent)."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from drivers.sim.variants import Variants
from drivers.zvt.link import T2

_CARD_PAN = "541333******0074"  # a PT masks PANs towards the ECR


@dataclass(slots=True)
class Transaction:
    receipt: int
    trace: int
    kind: str  # preauth, sale, booking (a capture), reversal, refund
    amount: int
    state: str = "open"  # open, booked, reversed
    booked: int = 0


@dataclass(slots=True)
class SimConfig:
    password: str = "000000"  # noqa: S105 - the ZVT factory default, a simulator setting
    terminal_id: str = "52523535"
    currency: int = 978
    outcomes: deque[str] = field(default_factory=deque)
    booking_faults: deque[int] = field(
        default_factory=deque
    )  # result codes for the next bookings (06 23/24/25)
    default_outcome: str = "approve"
    card_wait_s: float = 0.05
    result_ack_timeout_s: float = 5.0
    nak_next: int = 0
    corrupt_next: int = 0
    noise: int = 0
    state_path: Path | None = None
    echo: Literal["booked", "reversed"] = "booked"
    tap_required: bool = (
        False  # read-card (06 C0) waits for tap() instead of presenting a card by itself
    )
    extensions: Literal["none", "new_receipt", "same_receipt"] = "none"
    unplug_at: tuple[int, int] | None = (
        None  # (command, n): cut the line before the n-th message answering it
    )
    # What BMP 22 and the printed slip carry: masked, as a PT masks towards the ECR; a full
    # number plays a PT that does not mask (the gateway must still never store or log it).
    pan: str = _CARD_PAN
    on_result: Callable[[], None] | None = None
    # A connection that closes while an approval waits for its acknowledgement: the terminal
    # reverses it as ZVT 2.2.8 says ("reverse"), or books it anyway ("keep", a variant the
    # gateway must survive: its capture is then owed as unconfirmed, never booked unseen).
    unacked_on_close: Literal["reverse", "keep"] = "reverse"
    # Identical "please wait" statuses (04 FF 17) while the host authorises, as real PTs repeat
    # them: each needs its own 80 00, none may be mistaken for a retransmission.
    please_wait: int = 0
    # Line noise that eats the ECR's ACK to the next N results: the PT repeats the 04 0F after
    # its T2 (link_t2_s), when the ECR has already answered it with 80 00.
    result_ack_lost: int = 0
    link_t2_s: float = T2
    # Called with the batch an end of day (06 50) closes, before the terminal forgets it: a
    # campaign keeps the books of every batch of a long run.
    on_end_of_day: Callable[[list[Transaction]], None] | None = None
    # How this terminal model differs from the spec's (drivers/sim/variants.py).
    variants: Variants = field(default_factory=Variants)


@dataclass(slots=True)
class SimState:
    """The PT's turnover store; survives a simulated power loss (and a restart, via state_path)."""

    next_receipt: int = 1
    next_trace: int = 1
    transactions: dict[int, Transaction] = field(default_factory=dict)
    registered: bool = False
    config_byte: int = 0
    text_blocks: bool = False
    last_result: list[tuple[int, str]] = field(default_factory=list)  # BMPs of the last 04 0F, hex
    displayed: list[str] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    unanswered: int = 0  # messages to the ECR whose 80 00 never came (send_expect_ack)
    results_acknowledged: int = 0  # approving 04 0F the ECR acknowledged (80 00) in time
    taps: int = 0  # cards presented for the next read-card (tap_required)
    sequence_no: int = 0  # the PT's message number (variants.sequence_numbers, TLV 1F73)


class Simulator(Protocol):
    """What a connection's handlers use of the simulated terminal (``SimTerminal``): named here
    so that they need not import the module that runs them."""

    config: SimConfig
    state: SimState
    rng: random.Random

    def _save(self) -> None: ...
    def open_preauths(self) -> list[int]: ...
