"""ZVT link layers, sans-I/O: bytes and ``now`` in; bytes, APDUs and deadlines out.

``SerialLink`` (PA00P016 ch. 3): every frame is confirmed with a raw ACK; on NAK or no
answer within T2 the sender repeats it, at most twice; a receiver NAKs a bad CRC or a frame
whose bytes stall for more than T1. A frame equal to the last one delivered, arriving before
this side has sent anything at all, is a retransmission (our ACK was lost): it is acknowledged
again and not delivered twice. Once we have answered -- if only with 80 00 -- an equal frame is a
new message: PTs repeat "please wait" (04 FF) and print lines, and each needs its own 80 00. A
retransmission that comes after our answer is delivered; the sequence layer knows which
messages cannot come twice (a result within one sequence) and drops those.

The peer's link applies the same rule to us. So a frame the peer has acknowledged (ACK: "received
intact", not "answered") must not go out again byte for byte while the peer has sent nothing
since: it would be taken for a retransmission and dropped -- a command the PT ignored, repeated
after T3, never gets through (docs/ZVT-VARIANTS.md, 1). ``taken_for_a_retransmission`` tells the
sequence layer, which must first send something else.

``StreamLink`` (PA00P016 ch. 4, TCP): no framing, no ACK/NAK; APDUs are cut out of the stream.

Both expose: ``send_apdu``, ``receive_data``, ``data_to_send``, ``next_event``,
``next_deadline``, ``on_deadline``, ``idle``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from drivers.zvt.apdu import Apdu, ApduReader
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.serial_framing import (
    ACK,
    NAK,
    AckReceived,
    BadFrame,
    FrameDecoder,
    FrameReceived,
    NakReceived,
    frame,
)

T1 = 0.2  # max gap between two bytes of one frame
T2 = 5.0  # max time from the end of a frame to its ACK/NAK
RETRIES = 2  # repeats after NAK or T2: three attempts in all


@dataclass(frozen=True, slots=True)
class ApduReceived:
    apdu: Apdu


@dataclass(frozen=True, slots=True)
class LinkFailed:
    reason: str


LinkEvent = ApduReceived | LinkFailed


class _Outputs:
    """What both links hand to their adapter: bytes to write and events to act on."""

    _out: bytearray
    _events: deque[LinkEvent]

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def next_event(self) -> LinkEvent | None:
        return self._events.popleft() if self._events else None


class SerialLink(_Outputs):
    def __init__(self, t1: float = T1, t2: float = T2, retries: int = RETRIES) -> None:
        self.t1, self.t2, self.retries = t1, t2, retries
        self.stats = {"naks_sent": 0, "naks_received": 0, "retransmits": 0, "duplicates": 0}
        # Our last frame the peer acknowledged, until the peer sends a frame of its own. Kept
        # over reset(): reopening our end of a serial line tells the peer's link nothing.
        self._acked_unanswered: bytes | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything in flight (after a reconnect); statistics are kept, and so is what
        the peer's link last acknowledged."""
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._events: deque[LinkEvent] = deque()
        self._queue: deque[bytes] = deque()  # APDUs waiting for their turn
        self._in_flight: bytes | None = None
        self._attempts = 0
        self._ack_deadline: float | None = None
        self._byte_deadline: float | None = None
        self._last_delivered: bytes | None = None
        self._sent_since_delivery = False  # any frame of ours since the last delivery

    @property
    def idle(self) -> bool:
        return self._in_flight is None and not self._queue

    def send_apdu(self, apdu: bytes, now: float) -> None:
        self._queue.append(apdu)
        self._next(now)

    def taken_for_a_retransmission(self, apdu: bytes) -> bool:
        """Would the peer's link drop ``apdu`` as a repeat of the frame it last acknowledged?"""
        return self.idle and apdu == self._acked_unanswered

    def heard_from_peer(self) -> None:
        """The peer sent frames outside this link (refused while the line was quieted,
        drivers/zvt/line_quiet.py): its link no longer takes our next frame for a repeat."""
        self._acked_unanswered = None

    def receive_data(self, data: bytes, now: float) -> None:
        for event in self._decoder.feed(data):
            if isinstance(event, FrameReceived):
                self._frame(event.apdu)
            elif isinstance(event, BadFrame):
                self._nak()
            elif isinstance(event, AckReceived):
                if self._in_flight is not None:
                    self._acked_unanswered = self._in_flight
                    self._in_flight, self._ack_deadline = None, None
                    self._next(now)
            elif isinstance(event, NakReceived):
                self.stats["naks_received"] += 1
                if self._in_flight is not None:
                    self._retransmit(now, "NAK")
        self._byte_deadline = now + self.t1 if self._decoder.in_frame else None

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._ack_deadline, self._byte_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def on_deadline(self, now: float) -> None:
        if self._byte_deadline is not None and now >= self._byte_deadline:
            self._byte_deadline = None
            self._decoder.reset()
            self._nak()  # T1: the frame stalled
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._retransmit(now, "no ACK within T2")

    def _frame(self, apdu: bytes) -> None:
        self._out.append(ACK)
        self._acked_unanswered = None  # the peer sent a frame: its next one of ours is news
        try:
            decoded = Apdu.decode(apdu)
        except ZvtDecodeError:
            self._out[-1] = NAK  # CRC right but the APDU is not: ask again
            self.stats["naks_sent"] += 1
            return
        if apdu == self._last_delivered and not self._sent_since_delivery:
            self.stats["duplicates"] += 1
            return
        self._last_delivered, self._sent_since_delivery = apdu, False
        self._events.append(ApduReceived(decoded))

    def _nak(self) -> None:
        self._out.append(NAK)
        self.stats["naks_sent"] += 1

    def _next(self, now: float) -> None:
        if self._in_flight is None and self._queue:
            self._in_flight = self._queue.popleft()
            self._attempts = 1
            self._transmit(now)

    def _transmit(self, now: float) -> None:
        apdu = self._in_flight or b""
        self._sent_since_delivery = True
        self._out += frame(apdu)
        self._ack_deadline = now + self.t2

    def _retransmit(self, now: float, why: str) -> None:
        if self._attempts > self.retries:
            self._in_flight, self._ack_deadline = None, None
            self._queue.clear()
            self._events.append(
                LinkFailed(f"frame not acknowledged after {self._attempts} attempts ({why})")
            )
            return
        self._attempts += 1
        self.stats["retransmits"] += 1
        self._transmit(now)


class StreamLink(_Outputs):
    def __init__(self) -> None:
        self._reader = ApduReader()
        self._out = bytearray()
        self._events: deque[LinkEvent] = deque()

    idle = True

    def taken_for_a_retransmission(self, apdu: bytes) -> bool:  # noqa: ARG002
        return False  # no link layer: every APDU is delivered

    def send_apdu(self, apdu: bytes, now: float) -> None:  # noqa: ARG002 - same shape as SerialLink
        self._out += apdu

    def receive_data(self, data: bytes, now: float) -> None:  # noqa: ARG002
        self._events.extend(ApduReceived(a) for a in self._reader.feed(data))

    def next_deadline(self) -> float | None:
        return None

    def on_deadline(self, now: float) -> None:
        pass

    def reset(self) -> None:
        self._reader.clear()
        self._out.clear()
        self._events.clear()


Link = SerialLink | StreamLink
