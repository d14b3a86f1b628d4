"""Waiting for a serial line to fall quiet before our first command, sans-I/O: bytes and
``now`` in, bytes (NAKs only) and a deadline out.

Why: ZVT answers carry no reference to their command. An ECR process killed in the middle of a
sequence leaves the PT running it; seconds later the PT sends that sequence's frames (80 00,
04 0F, 06 1E 6C ...) to whoever has the line open -- the restarted process, which would take
them for the acknowledgement and answer of its own next command (issue 26). A new TCP
connection carries nothing of the old one; a serial line does.

What the PT does with a frame nobody acknowledges (PA00P016 ch. 3, and this driver's own link,
``drivers/zvt/link.py``): it repeats it after NAK or after T2 without an answer, at most twice,
then gives the transmission up -- and by ZVT 2.2.8 reverses a result (04 0F) that was never
acknowledged. So:

* On opening the line we write one NAK and listen ``LINE_PROBE_S``. An idle PT has nothing in
  flight and ignores a NAK outside a frame; a PT with a frame in flight repeats it at once.
  A fresh, quiet line costs only this probe (0.5 s once per open).
* Any byte heard (the probe's answer, or bytes the OS kept from before the restart) means the
  PT is in a sequence of its own: every whole frame is answered with NAK -- never ACK, which
  would tell the PT its stale message was delivered and let the dead sequence go on -- so the
  PT's link gives it up after its repeats (one frame is refused at most RETRIES + 1 times in a
  row: a PT that repeats it on every NAK, even idle, would otherwise answer our NAKs for ever
  and no open would end; silent, we leave it to its own T2); then we wait until the line has
  been quiet for ``quiet_s`` (default ``LINE_QUIET_S``, longer than the PT's T2
  retransmission interval: a frame still pending would have been repeated by then).
* Bounded: a line that never falls quiet within ``LINE_QUIET_MAX_S`` (four frames' worth of
  the PT's full retransmission window) is a failed open (the caller reports the terminal
  unreachable and tries again later), never an endless wait.
"""

from __future__ import annotations

from drivers.zvt.link import RETRIES, T2
from drivers.zvt.serial_framing import NAK, BadFrame, FrameDecoder, FrameReceived

LINE_PROBE_S = 0.5  # after our NAK: a PT with a frame in flight repeats it within this
LINE_QUIET_S = T2 + 1.0  # silence that proves no frame is pending at the PT (> its T2)
LINE_QUIET_MAX_S = 4 * (RETRIES + 1) * T2  # 60 s: the longest we wait for silence
STALE_KEPT = 32  # frames named in the log and a failed open's message; the rest only counted


class LineQuiet:
    """One wait for silence. ``probe``: start with a NAK and a short window (a line just
    opened); without it (after a registration that was not answered as one), wait the full
    ``quiet_s`` at once."""

    def __init__(self, now: float, *, quiet_s: float = LINE_QUIET_S, probe: bool = True) -> None:
        self.quiet_s = quiet_s
        self._decoder = FrameDecoder()
        self._out = bytearray([NAK]) if probe else bytearray()
        self._window = min(LINE_PROBE_S, quiet_s) if probe else quiet_s
        self._start = self._last = now
        self.stale: list[str] = []  # class and instruction of the first frames (no card data)
        self.refused = 0  # frames heard while quieting, all of them
        self.heard = False
        self._refused: tuple[bytes | None, int] = (None, 0)  # the last frame, NAKs it got

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def receive_data(self, data: bytes, now: float) -> None:
        if not data:
            return
        self.heard, self._last, self._window = True, now, self.quiet_s
        for event in self._decoder.feed(data):
            if isinstance(event, FrameReceived):
                self.refused += 1
                if len(self.stale) < STALE_KEPT:
                    self.stale.append(event.apdu[:2].hex().upper())
                self._refuse(bytes(event.apdu))
            elif isinstance(event, BadFrame):
                self._refuse(b"")

    def _refuse(self, apdu: bytes) -> None:
        last, naks = self._refused
        naks = naks if apdu == last else 0
        if naks <= RETRIES:  # the PT's own link gives a frame up after its repeats
            self._out.append(NAK)
        self._refused = (apdu, naks + 1)

    def quiet(self, now: float) -> bool:
        return now - self._last >= self._window

    def gave_up(self, now: float) -> bool:
        return not self.quiet(now) and now - self._start >= LINE_QUIET_MAX_S

    def next_deadline(self) -> float:
        return min(self._last + self._window, self._start + LINE_QUIET_MAX_S)
