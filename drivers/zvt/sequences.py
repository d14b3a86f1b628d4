"""The ECR side of a ZVT command sequence (PA00P015 ch. 1 and 2), sans-I/O.

    ECR → PT  command                 state AWAITING_ACK, T3 running
    PT  → ECR 80 00 | 84 xx           accepted → PT_MASTER (T4) | rejected → done
    PT  → ECR 04 FF  (intermediate)   ECR acks, T4 restarts (or the timeout it carries)
    PT  → ECR 06 D1 / 06 D3 (print)   ECR acks
    PT  → ECR 04 0F  (result)         HOLDING_RESULT: acked only after ``confirm_result()``,
                                      so the caller persists it first (ack-before-store, 2.2.8)
    PT  → ECR 06 0F / 06 1E           ECR acks → done (Read Card ends with its 04 0F)

| state          | input                    | next          | output                       |
|----------------|--------------------------|---------------|------------------------------|
| IDLE           | start(command)           | AWAITING_ACK  | command                      |
| AWAITING_ACK   | 80 00                    | PT_MASTER     | Accepted (Completed if ack-only) |
| AWAITING_ACK   | 84 xx                    | IDLE          | Rejected(xx)                 |
| AWAITING_ACK   | T3 expires               | IDLE          | TimedOut("T3")               |
| PT_MASTER      | 04 FF / 06 D1 / 06 D3    | PT_MASTER     | 80 00, Intermediate/Printed  |
| PT_MASTER      | 04 0F                    | HOLDING_RESULT| ResultReceived               |
| HOLDING_RESULT | confirm_result()         | PT_MASTER/IDLE| 80 00 (Completed for Read Card) |
| PT_MASTER      | 06 0F                    | IDLE          | 80 00, Completed             |
| PT_MASTER      | 06 1E                    | IDLE          | 80 00, Aborted(code)         |
| PT_MASTER/HOLD | T4 expires               | IDLE          | TimedOut("T4")               |
| PT_MASTER      | abort()                  | PT_MASTER     | 06 B0 (the PT ends with 06 1E) |
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum, auto

from drivers.zvt.apdu import Apdu
from drivers.zvt.charset import DEFAULT_CHARSET
from drivers.zvt.constants import INTERMEDIATE_TEXT, Command
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import bcd_decode, find_tlv
from drivers.zvt.messages import Message, abort, ack

T3 = 5.0
T4 = 180.0
NACK_NO_ERROR = 0x8400
SEQUENCE_TAG = 0x1F73  # TLV: the PT's message sequence number


# The fields of a 04 0F that carry money: result code, amount, trace, receipt, currency.
MONEY_BMPS = (0x27, 0x04, 0x0B, 0x87, 0x49)


def is_repeat(previous: Message, message: Message) -> bool:
    """A 04 0F the PT sent again because our ACK was lost, not a second result. With the PT's
    sequence number (TLV 1F73) the number decides (a repeat keeps it, a new result has a new
    one even when every other byte is the same) -- but only together with the money: a result
    with the same number and other money is reported, never dropped as a repeat (a second
    report of the same booking is safe: the engine keys it; a dropped one is lost money).
    Without numbers, identical bytes are a repeat -- a PT never reports the same result twice
    in one sequence."""
    before, now = find_tlv(previous.tlv, SEQUENCE_TAG), find_tlv(message.tlv, SEQUENCE_TAG)
    if before is not None and now is not None:
        same_money = all(previous.get(n) == message.get(n) for n in MONEY_BMPS)
        return before.value == now.value and same_money
    return previous == message


class State(Enum):
    IDLE = auto()
    AWAITING_ACK = auto()
    PT_MASTER = auto()
    HOLDING_RESULT = auto()


@dataclass(frozen=True, slots=True)
class Accepted:
    pass


@dataclass(frozen=True, slots=True)
class Rejected:
    code: int


@dataclass(frozen=True, slots=True)
class Intermediate:
    status: int
    text: str


@dataclass(frozen=True, slots=True)
class Printed:
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResultReceived:
    message: Message


@dataclass(frozen=True, slots=True)
class Completed:
    message: Message | None


@dataclass(frozen=True, slots=True)
class Aborted:
    code: int
    message: Message


@dataclass(frozen=True, slots=True)
class TimedOut:
    timer: str  # "T3": the command was never accepted; "T4": accepted, fate unknown


@dataclass(frozen=True, slots=True)
class Malformed:
    error: str


EcrEvent = (
    Accepted
    | Rejected
    | Intermediate
    | Printed
    | ResultReceived
    | Completed
    | Aborted
    | TimedOut
    | Malformed
)
FINAL = (Rejected, Completed, Aborted, TimedOut)


@dataclass(slots=True)
class _Sequence:
    command: int
    completes_on_ack: bool
    completes_on_result: bool
    t4: float
    aborting: bool = False
    deadline: float | None = None
    results: list[Message] = field(default_factory=list)


class EcrSequence:
    def __init__(self, t3: float = T3, t4: float = T4, charset: str = DEFAULT_CHARSET) -> None:
        self.t3, self.t4 = t3, t4
        self.charset = charset  # the terminal's text character set (charset.py)
        self.state = State.IDLE
        self._seq: _Sequence | None = None
        self._out: deque[Apdu] = deque()
        self._events: deque[EcrEvent] = deque()

    # ---- inputs -------------------------------------------------------------------------

    def start(
        self,
        command: Message,
        now: float,
        *,
        t3: float | None = None,
        completes_on_ack: bool = False,
        completes_on_result: bool = False,
    ) -> None:
        if self.state is not State.IDLE:
            raise RuntimeError(f"a sequence is running ({self.state.name}); one at a time")
        self._seq = _Sequence(command.command, completes_on_ack, completes_on_result, self.t4)
        self._seq.deadline = now + (self.t3 if t3 is None else t3)
        self.state = State.AWAITING_ACK
        self._out.append(command.to_apdu())

    def abort(self, now: float) -> bool:  # noqa: ARG002 - same shape as the other inputs
        """Ask the PT to abort the running sequence (allowed while it waits for a card)."""
        if self._seq is None or self.state is not State.PT_MASTER or self._seq.aborting:
            return False
        self._seq.aborting = True
        self._out.append(abort().to_apdu())
        return True

    def receive(self, apdu: Apdu, now: float) -> None:
        seq = self._seq
        if seq is None:
            self._events.append(Malformed(f"unexpected {apdu!r} while idle"))
            return
        try:
            message = Message.from_apdu(apdu, self.charset)
        except ZvtDecodeError as exc:
            self._events.append(Malformed(str(exc)))
            if self.state is not State.AWAITING_ACK:
                self._out.append(
                    Apdu(0x84, 0x9A)
                )  # 9A: ZVT protocol error; the PT repeats or aborts
            return
        if self.state is State.AWAITING_ACK:
            self._on_response(seq, message, now)
        elif self.state is State.PT_MASTER:
            self._on_pt_message(seq, message, now)
        else:
            self._events.append(Malformed(f"{apdu!r} while the result is held"))

    def confirm_result(self, now: float) -> None:
        """The held 04 0F is safely stored: acknowledge it."""
        if self.state is not State.HOLDING_RESULT or self._seq is None:
            return
        self._out.append(ack().to_apdu())
        if self._seq.completes_on_result:
            self._finish(Completed(self._seq.results[-1]))
        else:
            self.state = State.PT_MASTER
            self._seq.deadline = now + self._seq.t4

    def on_deadline(self, now: float) -> None:
        if self._seq is not None and self._seq.deadline is not None and now >= self._seq.deadline:
            self._finish(TimedOut("T3" if self.state is State.AWAITING_ACK else "T4"))

    # ---- outputs ------------------------------------------------------------------------

    def apdus_to_send(self) -> list[Apdu]:
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> EcrEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        return self._seq.deadline if self._seq else None

    # ---- internals ----------------------------------------------------------------------

    def _on_response(self, seq: _Sequence, message: Message, now: float) -> None:
        if message.command == Command.ACK or (
            message.command == NACK_NO_ERROR and not message.prefix.strip(b"\x00")
        ):
            # 84 00 00 is "negative acknowledgement, no error": terminals use it for 80 00 00
            # (Portalum.Zvt accepts it as its "alternative" positive completion).
            self._events.append(Accepted())
            if seq.completes_on_ack:
                self._finish(Completed(None))
            else:
                self.state, seq.deadline = State.PT_MASTER, now + seq.t4
        elif message.command >> 8 == 0x84:
            self._finish(Rejected(message.result_code or message.command & 0xFF))
        else:
            self._events.append(Malformed(f"expected 80 00 or 84 xx, got {message.command:04X}"))

    def _on_pt_message(self, seq: _Sequence, message: Message, now: float) -> None:
        kind = message.command
        if kind == Command.ACK or kind >> 8 == 0x84:
            return  # the PT acknowledging our 06 B0: the sequence itself still has to end
        if kind == Command.STATUS_INFORMATION:
            if seq.results and is_repeat(seq.results[-1], message):
                # The serial link repeated it (our ACK was lost after we had answered): a PT
                # never reports the same result twice in one sequence. Answer, do not re-book.
                self._out.append(ack().to_apdu())
                return
            seq.results.append(message)
            self.state = State.HOLDING_RESULT
            self._events.append(ResultReceived(message))
            return
        self._out.append(ack().to_apdu())
        if kind == Command.INTERMEDIATE_STATUS:
            status = message.intermediate_status or 0
            seq.deadline = now + self._t4_from(message, seq)
            lines = message.text_lines
            self._events.append(
                Intermediate(status, " / ".join(lines) or INTERMEDIATE_TEXT.get(status, ""))
            )
        elif kind in (Command.PRINT_LINE, Command.PRINT_TEXT_BLOCK):
            line = message.print_line
            self._events.append(Printed((line[1],) if line else tuple(message.text_lines)))
            seq.deadline = now + seq.t4
        elif kind == Command.COMPLETION:
            self._finish(Completed(message))
        elif kind == Command.ABORT_PT:
            self._finish(Aborted(message.result_code or 0, message))
        else:
            self._events.append(Malformed(f"unexpected {kind:04X} while the PT is master"))
            seq.deadline = now + seq.t4

    @staticmethod
    def _t4_from(message: Message, seq: _Sequence) -> float:
        """A 04 FF may carry a timeout in BCD minutes that replaces T4 for long steps."""
        if len(message.prefix) >= 2 and message.prefix[1]:
            try:
                return bcd_decode(message.prefix[1:2]) * 60.0
            except ZvtDecodeError:
                return seq.t4
        return seq.t4

    def _finish(self, event: EcrEvent) -> None:
        self._events.append(event)
        self._seq = None
        self.state = State.IDLE
