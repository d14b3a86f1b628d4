"""The asyncio adapter: a transport, a link core and the ECR sequence core, driven together.

The only code in ``drivers.zvt`` that waits. It reads ``loop.time()``, feeds bytes and
deadlines into the sans-I/O cores and writes what they produce. One sequence at a time;
``abort()`` may be called from another task while a sequence runs (card wait).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drivers.errors import ProtocolError
from drivers.transport.base import Transport
from drivers.zvt.charset import DEFAULT_CHARSET
from drivers.zvt.line_quiet import LINE_QUIET_S, LineQuiet
from drivers.zvt.link import ApduReceived, LinkFailed, SerialLink, StreamLink
from drivers.zvt.messages import Message
from drivers.zvt.sequences import (
    FINAL,
    Aborted,
    Accepted,
    Completed,
    EcrSequence,
    Intermediate,
    Malformed,
    Printed,
    Rejected,
    ResultReceived,
    TimedOut,
)

_LOGGER = logging.getLogger(__name__)
_WIRE = logging.getLogger("drivers.zvt.wire")


@dataclass(slots=True)
class SequenceOutcome:
    """Everything one command sequence produced, for the driver to turn into a result."""

    accepted: bool = False
    rejected: int | None = None
    results: list[Message] = field(default_factory=list)
    intermediates: list[str] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)
    completion: Message | None = None
    aborted: Aborted | None = None
    timed_out: str | None = None
    malformed: list[str] = field(default_factory=list)


OnResult = Callable[[Message], Awaitable[None]]


class ZvtClient:
    def __init__(
        self,
        transport: Transport,
        *,
        serial_framing: bool,
        t3: float = 5.0,
        t4: float = 180.0,
        charset: str = DEFAULT_CHARSET,
        line_quiet_s: float = LINE_QUIET_S,
    ) -> None:
        self.transport = transport
        self.line_quiet_s = line_quiet_s
        # The PT may still be in a sequence of its own (a registration not answered as one):
        # the next open waits for the full quiet period, not only the probe (line_quiet.py).
        self.unsettled = False
        self.link: SerialLink | StreamLink = SerialLink() if serial_framing else StreamLink()
        self.ecr = EcrSequence(t3=t3, t4=t4, charset=charset)
        self._lock = asyncio.Lock()
        self.connected = False
        # Called with ("ECR->PT" | "PT->ECR", APDU bytes) for every APDU: the HIL byte trace.
        self.tap: Callable[[str, bytes], None] | None = None

    async def open(self) -> None:
        await self.transport.open()
        self.link.reset()
        self.ecr = EcrSequence(t3=self.ecr.t3, t4=self.ecr.t4, charset=self.ecr.charset)
        await self.quiesce()
        self.connected = True

    async def quiesce(self) -> None:
        """On a serial line, refuse (NAK) whatever the PT still sends of an earlier ECR's
        sequence and return once the line is quiet (drivers/zvt/line_quiet.py). Nothing is
        ACKed, nothing handed to a sequence. TCP: a new connection carries nothing of the old
        one, so nothing to do. ProtocolError if the line never falls quiet (bounded)."""
        if not isinstance(self.link, SerialLink):
            return
        async with self._lock:  # no sequence reads the line meanwhile
            await self._quiesce(self.link)

    async def _quiesce(self, link: SerialLink) -> None:
        loop = asyncio.get_running_loop()
        quiet = LineQuiet(loop.time(), quiet_s=self.line_quiet_s, probe=not self.unsettled)
        while True:
            out = quiet.data_to_send()
            if out:
                await self.transport.write(out)
            now = loop.time()
            if quiet.quiet(now):
                break
            if quiet.gave_up(now):
                raise ProtocolError(
                    f"{self.transport.description}: the line did not fall quiet "
                    f"({quiet.refused} stale frames, first {quiet.stale})"
                )
            data = await self.transport.read(max(quiet.next_deadline() - now, 0.0))
            quiet.receive_data(data, loop.time())
        self.unsettled = False
        if quiet.stale:
            link.heard_from_peer()  # its link has seen frames of the PT since ours
        if quiet.heard:
            _LOGGER.warning(
                "zvt.stale_refused",
                extra={
                    "terminal": self.transport.description,
                    "apdus": quiet.stale,
                    "frames": quiet.refused,
                },
            )

    async def close(self) -> None:
        self.connected = False
        await self.transport.close()

    def taken_for_a_retransmission(self, command: Message) -> bool:
        """Would the PT's link drop ``command`` as a repeat of a frame it has acknowledged and
        not answered (drivers/zvt/link.py)? Then another command must go first."""
        return self.link.taken_for_a_retransmission(command.to_apdu().encode())

    async def settle(self) -> None:
        """Listen for the link's T2 outside any sequence, taking in what the PT sends.

        Called when the PT acknowledged our last frame and has sent nothing since. An answer
        it did send may have been lost (our end of the line was being reopened): its link
        repeats it within T2. Heard now, it is stale -- acknowledged on the link, never
        answered with 80 00 (a result the PT then reverses, as for any result we never
        confirmed), logged and dropped -- instead of answering our next command, which would
        put every later answer one out of step."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            end = loop.time() + self.link_t2
            while (left := end - loop.time()) > 0:
                data = await self.transport.read(left)
                now = loop.time()
                if data:
                    self.link.receive_data(data, now)
                self.link.on_deadline(now)
                while (event := self.link.next_event()) is not None:
                    if isinstance(event, LinkFailed):
                        raise ProtocolError(f"{self.transport.description}: {event.reason}")
                    if self.tap is not None:
                        self.tap("PT->ECR", event.apdu.encode())
                    apdu = event.apdu  # class and instruction only: a result carries card data
                    _LOGGER.warning(
                        "zvt.stale",
                        extra={
                            "terminal": self.transport.description,
                            "apdu": f"{apdu.cls:02X}{apdu.instr:02X}",
                        },
                    )
                await self._flush(now)

    @property
    def link_t2(self) -> float:
        return self.link.t2 if isinstance(self.link, SerialLink) else 0.0

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def request_abort(self) -> bool:
        """Abort the running sequence (the PT allows it while it waits for the card).

        Safe from another task: the cores are plain objects on the same event loop, so the
        06 B0 is queued and written at once, without waking the running sequence."""
        if not self._lock.locked():
            return False
        now = asyncio.get_running_loop().time()
        if not self.ecr.abort(now):
            return False
        await self._flush(now)
        return True

    async def execute(
        self,
        command: Message,
        *,
        t3: float | None = None,
        completes_on_ack: bool = False,
        completes_on_result: bool = False,
        on_result: OnResult | None = None,
    ) -> SequenceOutcome:
        """Run one sequence to its end. ConnectionLost/ProtocolError if the line dies."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            self.ecr.start(
                command,
                loop.time(),
                t3=t3,
                completes_on_ack=completes_on_ack,
                completes_on_result=completes_on_result,
            )
            outcome = SequenceOutcome()
            done = False
            try:
                while not (done and self.link.idle):
                    await self._flush(loop.time())
                    done = await self._drain_events(outcome, on_result) or done
                    await self._flush(loop.time())
                    if done and self.link.idle:
                        break
                    await self._wait(done)
            except BaseException:
                # The line died, the caller's deadline cancelled us, or the result could not be
                # stored: the PT's side of the sequence is unknown, so the next command opens
                # the line and registers afresh instead of finding this sequence still running.
                self.connected = False
                self.ecr = EcrSequence(t3=self.ecr.t3, t4=self.ecr.t4, charset=self.ecr.charset)
                raise
            return outcome

    async def _flush(self, now: float) -> None:
        for apdu in self.ecr.apdus_to_send():
            if _WIRE.isEnabledFor(logging.DEBUG):
                _WIRE.debug(
                    "tx", extra={"apdu": f"{apdu.cls:02X}{apdu.instr:02X}", "len": len(apdu.data)}
                )
            if self.tap is not None:
                self.tap("ECR->PT", apdu.encode())
            self.link.send_apdu(apdu.encode(), now)
        data = self.link.data_to_send()
        if data:
            await self.transport.write(data)

    async def _drain_events(self, outcome: SequenceOutcome, on_result: OnResult | None) -> bool:
        loop = asyncio.get_running_loop()
        done = False
        while (link_event := self.link.next_event()) is not None:
            if isinstance(link_event, LinkFailed):
                raise ProtocolError(f"{self.transport.description}: {link_event.reason}")
            if isinstance(link_event, ApduReceived):
                if self.tap is not None:
                    self.tap("PT->ECR", link_event.apdu.encode())
                self.ecr.receive(link_event.apdu, loop.time())
        while (event := self.ecr.next_event()) is not None:
            if isinstance(event, ResultReceived):
                outcome.results.append(event.message)
                if on_result is not None:
                    await on_result(event.message)  # persisted before the PT hears we have it
                self.ecr.confirm_result(loop.time())
            elif isinstance(event, Accepted):
                outcome.accepted = True
            elif isinstance(event, Intermediate):
                outcome.intermediates.append(event.text)
            elif isinstance(event, Printed):
                outcome.printed.extend(event.lines)
            elif isinstance(event, Malformed):
                outcome.malformed.append(event.error)
                _LOGGER.warning(
                    "zvt.malformed",
                    extra={"terminal": self.transport.description, "error": event.error},
                )
            self._record_final(event, outcome)
            done = done or isinstance(event, FINAL)
        return done

    @staticmethod
    def _record_final(event: object, outcome: SequenceOutcome) -> None:
        if isinstance(event, Rejected):
            outcome.rejected = event.code
        elif isinstance(event, Completed):
            outcome.completion = event.message
        elif isinstance(event, Aborted):
            outcome.aborted = event
        elif isinstance(event, TimedOut):
            outcome.timed_out = event.timer

    async def _wait(self, done: bool) -> None:
        loop = asyncio.get_running_loop()
        deadlines = [
            d for d in (self.link.next_deadline(), None if done else self.ecr.next_deadline()) if d
        ]
        timeout = max(min(deadlines) - loop.time(), 0.0) if deadlines else 1.0
        data = await self.transport.read(timeout)
        now = loop.time()
        if data:
            self.link.receive_data(data, now)
        self.link.on_deadline(now)
        if not done:
            self.ecr.on_deadline(now)
