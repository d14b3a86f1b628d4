"""The simulated PT: registration, status, card reads, pre-authorisation and its completion
(partial reversal, book total, reversal), sale, end of day, display and print, the open
pre-authorisation enquiry and repeat receipt — with configurable card outcomes and faults.

Card outcomes (one is consumed per card transaction; ``default_outcome`` after that):
``approve``, ``decline``, ``partial:<minor units>``, ``card_removed``, ``timeout``, ``busy``,
``power_loss`` (approve, send the result, then go silent / drop the line with the
pre-authorisation left open), ``disconnect`` (drop the line right after accepting),
``no_receipt`` / ``no_result_code`` (approve, but the 04 0F lacks BMP 87 / BMP 27).

Where real terminals differ, the simulator plays each variant (``SimConfig``): ``echo`` —
which amount the result of a partial reversal (06 23) carries: the amount ``booked`` or the
amount ``reversed`` (both are seen in the field); ``extensions`` — a reservation extension
(06 22 with the first hold's trace number) is refused (``none``), makes a new hold with its
own receipt (``new_receipt``) or increases the first hold (``same_receipt``);
``unacked_on_close`` — an approval whose connection closes before the ECR acknowledged it is
reversed (``reverse``, ZVT 2.2.8) or kept (``keep``).
Line faults (serial): ``nak_next`` frames NAKed, ``corrupt_next`` frames sent with a bad CRC,
``noise`` bytes of garbage before every frame. ``unplug_at`` = (command, n): the line is cut
just before the terminal's n-th message (0: its acknowledgement) of the next such exchange.
The terminal goes on as a real one would with nobody listening: what it did stays done, and a
result that is never acknowledged is reversed by the terminal itself (ZVT 2.2.8), as on a
timeout. A TCP connection is reset; on a serial line ``serve`` returns ``True`` so that the
caller plays the cable or the USB adapter coming back. ``on_result`` is called each time an
approving result has gone out and its acknowledgement is awaited: the crash campaign's cue to
kill the ECR inside the window ZVT 2.2.8 is about.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from drivers.errors import ConnectionLost
from drivers.sim.ports import Port
from drivers.sim.variants import Variants
from drivers.zvt import messages as m
from drivers.zvt.apdu import Apdu
from drivers.zvt.constants import RECEIPT_NONE, Command
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import Bmp, Tlv, bcd_encode, encode_tlv, find_tlv
from drivers.zvt.link import T2, ApduReceived, LinkFailed, SerialLink, StreamLink
from drivers.zvt.serial_framing import ACK, NAK

_LOGGER = logging.getLogger(__name__)
_CARD_PAN = "541333******0074"  # a PT masks PANs towards the ECR
_COMMAND_CLASSES = (0x05, 0x06, 0x08)  # ECR commands, as opposed to answers (80 00, 84 xx)


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


class _Silenced(Exception):
    """Power loss: stop answering for the rest of this sequence."""


class _Unplugged(ConnectionLost):
    """The line cut in the middle of an exchange (``SimConfig.unplug_at``)."""


class SimTerminal:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.state = self._load()
        self.rng = random.Random(7)  # noqa: S311 - line noise, not cryptography

    # ---- persistence ---------------------------------------------------------------------

    def _load(self) -> SimState:
        path = self.config.state_path
        if path is None or not path.exists():
            return SimState()
        raw = json.loads(path.read_text(encoding="utf-8"))
        state = SimState(next_receipt=raw["next_receipt"], next_trace=raw["next_trace"])
        state.transactions = {int(k): Transaction(**v) for k, v in raw["transactions"].items()}
        return state

    def _save(self) -> None:
        if self.config.state_path is None:
            return
        raw = {
            "next_receipt": self.state.next_receipt,
            "next_trace": self.state.next_trace,
            "transactions": {str(k): asdict(v) for k, v in self.state.transactions.items()},
        }
        self.config.state_path.write_text(json.dumps(raw), encoding="utf-8")

    def tap(self) -> None:
        """A driver presents a card for the next read-card (06 C0)."""
        self.state.taps += 1

    def open_preauths(self) -> list[int]:
        return [
            t.receipt
            for t in self.state.transactions.values()
            if t.kind == "preauth" and t.state == "open"
        ]

    # ---- connection loop -------------------------------------------------------------------

    async def serve(self, port: Port, *, serial: bool) -> bool:
        """Answer one connection until it closes; True if it was cut by ``unplug_at``."""
        session = _Session(self, port, serial)
        try:
            await session.run()
        except _Unplugged:
            _LOGGER.info("sim.unplugged", extra={"port": port.description})
            return True
        except ConnectionLost:
            _LOGGER.info("sim.connection_closed", extra={"port": port.description})
        return False

    async def serve_line(self, port: Port) -> None:
        """Answer a serial line until cancelled. A line does not end the way a TCP connection
        does: after a link failure (an ECR that died mid-frame) the PT waits for the next one."""
        while True:
            await self.serve(port, serial=True)
            await asyncio.sleep(0.05)  # a line that is gone for good must not spin the loop


class _Session:
    def __init__(self, sim: SimTerminal, port: Port, serial: bool) -> None:
        self.sim, self.port, self.serial = sim, port, serial
        self.link: SerialLink | StreamLink = SerialLink() if serial else StreamLink()
        self.losing_ack = False  # the next ACK byte is eaten by the line (result_ack_lost)
        self.inbox: deque[Apdu] = deque()
        self.loop = asyncio.get_running_loop()
        self.exchange, self.sent = 0, 0  # the command being answered; the messages sent for it
        self.cut = False  # unplugged: nothing goes out, nothing comes in, until the exchange ends

    # ---- I/O over the link cores ------------------------------------------------------------

    async def _flush(self) -> None:
        data = self.link.data_to_send()
        if not data:
            return
        cfg = self.sim.config
        if self.serial and data[:2] == b"\x10\x02" and cfg.corrupt_next > 0:
            cfg.corrupt_next -= 1
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        if self.serial and ACK in data and cfg.nak_next > 0 and data[0] == ACK:
            cfg.nak_next -= 1
            data = bytes([NAK]) + data[1:]
        if self.serial and cfg.noise and data[:2] == b"\x10\x02":
            garbage = bytes(
                self.sim.rng.choice([0x00, 0x41, 0x7F, 0xFE, 0x02, 0x03]) for _ in range(cfg.noise)
            )
            data = garbage + data
        await self.port.write(data)

    async def _pump(self, timeout: float | None) -> None:
        deadline = self.link.next_deadline()
        wait = timeout
        if deadline is not None:
            wait = (
                max(0.0, deadline - self.loop.time())
                if wait is None
                else min(wait, max(0.0, deadline - self.loop.time()))
            )
        data = await self.port.read(wait)
        now = self.loop.time()
        if self.losing_ack and data[:1] == bytes([ACK]):
            self.losing_ack, data = False, data[1:]
        if data:
            self.link.receive_data(data, now)
        self.link.on_deadline(now)
        while (event := self.link.next_event()) is not None:
            if isinstance(event, LinkFailed):
                raise ConnectionLost(event.reason)
            if isinstance(event, ApduReceived):
                self.inbox.append(event.apdu)
        await self._flush()

    async def receive(self, timeout: float | None) -> Apdu | None:
        if self.cut:
            return None  # nobody answers a terminal whose line is cut
        end = None if timeout is None else self.loop.time() + timeout
        while not self.inbox:
            left = None if end is None else end - self.loop.time()
            if left is not None and left <= 0:
                return None
            await self._pump(left)
        return self.inbox.popleft()

    async def send(self, message: m.Message) -> None:
        cfg = self.sim.config
        if message.command == Command.ACK and cfg.variants.positive_ack == "8400":
            message = m.nack(0x00)
        if cfg.unplug_at == (self.exchange, self.sent):
            cfg.unplug_at = None
            self.cut = True
            await self.port.reset()
        self.sent += 1
        if self.cut:
            return
        await self._transmit(message)

    async def _transmit(self, message: m.Message) -> None:
        cfg = self.sim.config
        if isinstance(self.link, SerialLink):
            self.link.t2 = cfg.link_t2_s  # read when used, as every setting: tests change them live
        self.link.send_apdu(message.to_apdu().encode(), self.loop.time())
        await self._flush()
        while not self.link.idle:
            await self._pump(None)

    async def reply(
        self, timeout: float, *, accept: tuple[int, ...] = (Command.ACK,)
    ) -> Apdu | None:
        """The ECR's answer while this PT is master, or None when ``timeout`` runs out.

        A command that arrives instead (an ECR that restarted and registers again) is no answer:
        it is refused at once as busy (84 9C) and the sequence goes on -- or, as some terminals
        do (``command_while_master = "ignore"``), not answered at all; then a serial link takes
        the ECR's byte-identical repeat for a retransmission, and the driver has to send another
        command first (docs/ZVT-VARIANTS.md, 1). Never run later, for an ECR that may be gone."""
        end = self.loop.time() + timeout
        while (apdu := await self.receive(max(0.0, end - self.loop.time()))) is not None:
            if apdu.command in accept or apdu.cls not in _COMMAND_CLASSES:
                return apdu
            if self.sim.config.variants.command_while_master == "ignore":
                self.sim.state.commands.append(f"{apdu.command:04X} ignored")
                continue
            self.sim.state.commands.append(f"{apdu.command:04X} busy")
            await self._transmit(m.nack(0x9C))
            if self.loop.time() >= end:
                break
        return None

    async def send_expect_ack(self, message: m.Message, timeout: float = 5.0) -> bool:
        """PT-master message: send, then wait for the ECR's 80 00 00."""
        await self.send(message)
        reply = await self.reply(timeout)
        acknowledged = reply is not None and reply.command == Command.ACK
        self.sim.state.unanswered += not acknowledged
        return acknowledged

    async def result_acknowledged(self, result: list[Bmp]) -> bool:
        """An approving 04 0F: the transaction stands only if the ECR acknowledges it in time."""
        cfg = self.sim.config
        if self.serial and cfg.result_ack_lost > 0:
            cfg.result_ack_lost -= 1
            self.losing_ack = True
        await self.send(m.status_information(self._numbered(result)))
        if cfg.on_result is not None and not self.cut:
            cfg.on_result()
        try:
            reply = await self.reply(cfg.result_ack_timeout_s)
        except ConnectionLost:
            if cfg.unacked_on_close == "keep":
                self._remember(result)  # it stands: its repeat (06 20) shows it
                raise
            return False  # nobody can acknowledge it now: undone as on a timeout
        acknowledged = reply is not None and reply.command == Command.ACK
        self.sim.state.results_acknowledged += acknowledged
        return acknowledged

    # ---- command loop ------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            apdu = await self.receive(None)
            if apdu is None or apdu.command == Command.ACK:
                continue  # a late acknowledgement of something we gave up waiting for
            try:
                command = m.Message.from_apdu(apdu)
            except ZvtDecodeError:
                await self.send(m.nack(0x9A))
                continue
            self.sim.state.commands.append(f"{command.command:04X}")
            self.exchange, self.sent = command.command, 0
            if self.sim.config.variants.refusals:  # a vendor's own refusal (84 1E 01 7D)
                await self.send(m.decode(self.sim.config.variants.refusals.popleft()))
                continue
            try:
                await self.dispatch(command)
                if self.cut:
                    raise _Unplugged(f"unplugged in the middle of {command.command:04X}")
            except _Silenced:
                if not self.serial:
                    raise ConnectionLost("simulated power loss") from None
            finally:
                self.sim._save()

    async def dispatch(self, cmd: m.Message) -> None:
        handlers = {
            Command.REGISTRATION: self.registration,
            Command.LOG_OFF: self.ack_only,
            Command.STATUS_ENQUIRY: self.status_enquiry,
            Command.PRE_AUTHORISATION: self.card_payment,
            Command.AUTHORIZATION: self.card_payment,
            Command.PARTIAL_REVERSAL: self.partial_reversal,
            Command.BOOK_TOTAL: self.book_total,
            Command.PRE_AUTH_REVERSAL: self.preauth_reversal,
            Command.REVERSAL: self.reversal,
            Command.REFUND: self.refund,
            Command.END_OF_DAY: self.end_of_day,
            Command.DIAGNOSIS: self.simple_completion,
            Command.ABORT: self.ack_only,
            Command.DISPLAY_TEXT: self.display_text,
            Command.PRINT_TEXT_BLOCK: self.print_block,
            Command.READ_CARD: self.read_card,
            Command.REPEAT_RECEIPT: self.repeat_receipt,
        }
        handler = (
            handlers.get(Command(cmd.command))
            if cmd.command in Command._value2member_map_
            else None
        )
        if handler is None:
            await self.send(m.nack(0x83))
            return
        await handler(cmd)

    # ---- handlers ----------------------------------------------------------------------------

    async def ack_only(self, _cmd: m.Message) -> None:
        await self.send(m.ack())

    async def simple_completion(self, _cmd: m.Message) -> None:
        await self.send(m.ack())
        await self.send_expect_ack(m.completion())

    async def registration(self, cmd: m.Message) -> None:
        if cmd.password != self.sim.config.password:
            await self.send(m.nack(0x6B))
            return
        if cmd.registration_currency not in (None, self.sim.config.currency):
            await self.send(m.nack(0x6F))
            return
        state = self.sim.state
        state.registered, state.config_byte = True, cmd.config_byte or 0
        permitted = find_tlv(cmd.tlv, 0x26)
        state.text_blocks = bool(
            permitted and any(c.value == b"\x06\xd3" for c in permitted.children)
        )
        await self.send(m.ack())
        await self.send_expect_ack(
            m.completion(
                [
                    Bmp(0x19, b"\x00"),
                    m.bmp_bcd(0x29, int(self.sim.config.terminal_id), 4),
                    m.bmp_currency(self.sim.config.currency),
                ]
            )
        )

    async def status_enquiry(self, _cmd: m.Message) -> None:
        variants = self.sim.config.variants
        await self.send(m.ack())
        version = "EVPAY-SIM-1.0" if variants.status_version else None
        await self.send_expect_ack(m.status_completion(version, variants.terminal_status))

    async def display_text(self, cmd: m.Message) -> None:
        self.sim.state.displayed = [
            b.value.decode("cp437") for b in cmd.bmps if 0xF1 <= b.number <= 0xF8
        ]
        await self.send(m.ack())

    async def print_block(self, cmd: m.Message) -> None:
        self.sim.state.printed.extend(cmd.text_lines)
        await self.send(m.ack())

    async def _wait_card(self) -> bool:
        """Wait for the card; False if the ECR sent Abort (06 B0) meanwhile."""
        end = self.loop.time() + self.sim.config.card_wait_s
        while (left := end - self.loop.time()) > 0:
            incoming = await self.reply(left, accept=(Command.ACK, Command.ABORT))
            if incoming is not None and incoming.command == Command.ABORT:
                await self.send(m.ack())
                return False
        return True

    def _next_outcome(self) -> str:
        cfg = self.sim.config
        return cfg.outcomes.popleft() if cfg.outcomes else cfg.default_outcome

    async def extension(self, cmd: m.Message) -> None:
        """06 22 with BMP 0B: extend the open reservation with that trace number."""
        await self.send(m.ack())
        first = next(
            (
                t
                for t in self.sim.state.transactions.values()
                if t.kind == "preauth" and t.state == "open" and t.trace == cmd.trace_number
            ),
            None,
        )
        mode = self.sim.config.extensions
        if mode == "none" or first is None:
            await self.send_expect_ack(m.abort_pt(0xB8 if first is None else 0x83))
            return
        added = cmd.amount or 0
        if mode == "same_receipt":
            first.amount += added
            tx = first
        else:
            tx = self._new_transaction("preauth", added)
        echoed = tx.amount if self.sim.config.variants.topup_amount == "total" else added
        result = self._status_bmps(tx, echoed)
        if not await self.result_acknowledged(result):
            if tx is first:
                first.amount -= added
            else:
                tx.state = "reversed"
            return
        self._remember(result)
        await self.send_expect_ack(m.completion())

    async def card_payment(self, cmd: m.Message) -> None:
        if cmd.command == Command.PRE_AUTHORISATION and cmd.trace_number is not None:
            await self.extension(cmd)
            return
        outcome = self._next_outcome()
        if outcome == "busy":
            await self.send(m.nack(0x9C))
            return
        await self.send(m.ack())
        if outcome == "disconnect":
            raise _Silenced
        card_read = self.sim.state.commands[-2:-1] == ["06C0"]  # card first: it was just read
        if card_read and not self.sim.config.variants.reask_card:
            pass  # the pre-authorisation uses the card just read
        elif self.sim.state.config_byte & 0x08 or card_read:
            await self.send_expect_ack(m.intermediate(0x0A))  # insert card
        if not await self._wait_card() or outcome == "timeout":
            await self.send_expect_ack(m.abort_pt(0x6C))
            return
        if self.sim.state.config_byte & 0x08:
            for _ in range(self.sim.config.please_wait):
                await self.send_expect_ack(
                    m.intermediate(0x17), timeout=self.sim.config.result_ack_timeout_s
                )
        if outcome == "card_removed":
            await self.send_expect_ack(m.abort_pt(0x64))
            return
        if outcome == "decline":
            await self.send_expect_ack(
                m.status_information([Bmp(0x27, b"\x05"), Bmp(0x3C, b"Karte abgelehnt")])
            )
            await self.send_expect_ack(m.abort_pt(0x05))
            return
        requested = cmd.amount or 2500
        approved = (
            min(requested, int(outcome.split(":")[1]))
            if outcome.startswith("partial:")
            else requested
        )
        kind = "preauth" if cmd.command == Command.PRE_AUTHORISATION else "sale"
        tx = self._new_transaction(kind, approved)
        tx.state = "open" if kind == "preauth" else "booked"
        tx.booked = 0 if kind == "preauth" else approved
        result = self._status_bmps(tx, approved)
        if outcome in (
            "no_receipt",
            "no_result_code",
        ):  # a faulty PT: the field the ECR needs is missing
            result = [b for b in result if b.number != (0x87 if outcome == "no_receipt" else 0x27)]
        if not await self.result_acknowledged(result):
            tx.state = "reversed"  # spec 2.2.8: no acknowledgement, no transaction (auto-reversal)
            return
        self._remember(result)
        if outcome == "power_loss":
            raise _Silenced
        await self.send_expect_ack(m.completion())

    def _new_transaction(self, kind: str, amount: int) -> Transaction:
        state = self.sim.state
        tx = Transaction(state.next_receipt, state.next_trace, kind, amount)
        state.transactions[tx.receipt] = tx
        state.next_receipt = state.next_receipt % 9999 + 1
        state.next_trace = state.next_trace % 999999 + 1
        return tx

    def _status_bmps(self, tx: Transaction, amount: int) -> list[Bmp]:
        now = datetime.now(UTC)
        return [
            Bmp(0x27, b"\x00"),
            m.bmp_amount(amount),
            m.bmp_currency(self.sim.config.currency),
            m.bmp_time(now.time().replace(microsecond=0)),
            m.bmp_date(now.date()),
            m.pan_bmp(self.sim.config.pan),
            m.bmp_receipt(tx.receipt),
            Bmp(0x3B, b"750071\x00\x00"),
            m.bmp_bcd(0x0B, tx.trace, 3),
            Bmp(0x19, b"\x60"),
            m.bmp_bcd(0x29, int(self.sim.config.terminal_id), 4),
            Bmp(0x0E, b"\x28\x12"),
            Bmp(0x8A, b"\x06"),
            m.bmp_llvar(0x8B, b"MasterCard\x00"),
            Bmp(
                0x06,
                encode_tlv([Tlv(0x60, children=(Tlv(0x43, bytes.fromhex("A0000000041010")),))]),
            ),
        ]

    def _numbered(self, bmps: list[Bmp]) -> list[Bmp]:
        """With ``variants.sequence_numbers`` the 04 0F carries the PT's number (TLV 1F73)."""
        if not self.sim.config.variants.sequence_numbers:
            return bmps
        self.sim.state.sequence_no += 1
        number = Tlv(0x1F73, self.sim.state.sequence_no.to_bytes(3, "big"))
        rest = [b for b in bmps if b.number != 0x06]
        container = b"".join(b.value for b in bmps if b.number == 0x06)
        return [*rest, Bmp(0x06, container + encode_tlv([number]))]

    def _remember(self, bmps: list[Bmp]) -> None:
        self.sim.state.last_result = [(b.number, b.value.hex()) for b in bmps]

    async def _book(
        self, receipt: int | None, booked: int | None, echo_reversed: bool = False
    ) -> None:
        """Common end of 06 23 / 06 24 / 06 25: book ``booked`` of the pre-auth (None = all);
        the result echoes the booked amount, or with ``echo_reversed`` the amount released."""
        tx = self.sim.state.transactions.get(receipt or -1)
        await self.send(m.ack())
        if self.sim.config.booking_faults:  # e.g. A0 receiver not ready: the acquirer is down
            await self.send_expect_ack(m.abort_pt(self.sim.config.booking_faults.popleft()))
            return
        if tx is None or tx.kind != "preauth":
            await self.send_expect_ack(m.abort_pt(0xB8))
            return
        if tx.state != "open":
            await self.send_expect_ack(m.abort_pt(0xB4))
            return
        amount = tx.amount if booked is None else booked
        if amount > tx.amount or amount < 0:
            await self.send_expect_ack(m.abort_pt(0xB7))
            return
        tx.state, tx.booked = ("booked", amount) if amount else ("reversed", 0)
        record = self._new_transaction("booking", amount)
        record.state = "booked"
        result = self._status_bmps(record, tx.amount - amount if echo_reversed else amount)
        if not await self.result_acknowledged(result):
            tx.state, tx.booked = "open", 0  # spec 2.2.8: no acknowledgement, no transaction
            record.state = "reversed"
            return
        self._remember(result)
        await self._receipt(tx, amount)
        await self.send_expect_ack(m.completion())

    async def _receipt(self, tx: Transaction, amount: int) -> None:
        state = self.sim.state
        if not state.config_byte & 0x02:
            return
        variants = self.sim.config.variants
        lines = [
            *([variants.receipt_title] if variants.receipt_title else []),
            "EVPAY SIMULATED TERMINAL",
            f"Receipt {tx.receipt:04d}",
            f"Amount {amount / 100:.2f} EUR",
            f"Card {self.sim.config.pan}",
        ]
        charset = variants.charset
        if state.text_blocks:
            block = m.print_text_block(lines, charset=charset, announce=variants.announce_charset)
            await self.send_expect_ack(block)
            return
        tlv = [Tlv(0x1F07, b"\x01")] if variants.print_line_tlv else []
        for line in lines:
            await self.send_expect_ack(m.print_line(0x00, line, tlv, charset))
        if variants.print_line_tlv:  # CardComplete ends with an empty last line (attribute 81)
            await self.send_expect_ack(m.print_line(0x81, "", tlv, charset))

    async def partial_reversal(self, cmd: m.Message) -> None:
        if cmd.receipt_number == RECEIPT_NONE:
            await self.send(m.ack())
            open_ = self.sim.open_preauths()
            first = open_[0] if open_ else RECEIPT_NONE
            listing = Tlv(0x23, children=tuple(Tlv(0x08, bcd_encode(r, 2)) for r in open_))
            bmps = [m.bmp_receipt(first)] + ([Bmp(0x06, encode_tlv([listing]))] if open_ else [])
            await self.send_expect_ack(m.abort_pt(0xB8, bmps))
            return
        tx = self.sim.state.transactions.get(cmd.receipt_number or -1)
        release = cmd.amount or 0
        booked = None if tx is None else max(tx.amount - release, -1)
        await self._book(
            cmd.receipt_number, booked, echo_reversed=self.sim.config.echo == "reversed"
        )

    async def book_total(self, cmd: m.Message) -> None:
        await self._book(cmd.receipt_number, cmd.amount)

    async def preauth_reversal(self, cmd: m.Message) -> None:
        await self._book(cmd.receipt_number, 0)

    async def reversal(self, cmd: m.Message) -> None:
        """06 30: reverse a payment of today's batch (a sale, or a pre-auth's capture by its
        booking receipt), whole: partly giving money back is a refund."""
        tx = self.sim.state.transactions.get(cmd.receipt_number or -1)
        await self.send(m.ack())
        if tx is None or tx.kind not in ("sale", "booking") or tx.state != "booked":
            await self.send_expect_ack(m.abort_pt(0xB5 if tx else 0xB8))
            return
        tx.state = "reversed"
        record = self._new_transaction("reversal", tx.amount)
        record.state = "booked"
        result = [Bmp(0x27, b"\x00"), m.bmp_amount(tx.amount), m.bmp_receipt(record.receipt)]
        if not await self.result_acknowledged(result):
            tx.state, record.state = "booked", "reversed"  # spec 2.2.8: the payment stands
            return
        self._remember(result)
        await self.send_expect_ack(m.completion())

    async def refund(self, cmd: m.Message) -> None:
        """06 31: money back to the card presented (the simulator presents its card at once)."""
        await self.send(m.ack())
        if cmd.password != self.sim.config.password:
            await self.send_expect_ack(m.abort_pt(0x6B))
            return
        record = self._new_transaction("refund", cmd.amount or 0)
        record.state = "booked"
        result = self._status_bmps(record, record.amount)
        if not await self.result_acknowledged(result):
            record.state = "reversed"
            return
        self._remember(result)
        await self.send_expect_ack(m.completion())

    async def end_of_day(self, cmd: m.Message) -> None:
        if cmd.password != self.sim.config.password:
            await self.send(m.nack(0x6B))
            return
        await self.send(m.ack())
        if self.sim.open_preauths():  # Feig: open pre-auths block the batch
            await self.send_expect_ack(
                m.abort_pt(0x77, [m.bmp_receipt(self.sim.open_preauths()[0])])
            )
            return
        batch = list(self.sim.state.transactions.values())
        paid = [
            t for t in batch if t.kind in ("sale", "booking") and t.state == "booked" and t.amount
        ]
        refunded = sum(t.amount for t in batch if t.kind == "refund" and t.state == "booked")
        total = max(
            0, sum(t.amount for t in paid) - refunded
        )  # the card group's net turnover (BCD: not below 0)
        receipts = [t.receipt for t in batch] or [0]
        # BMP 60: receipt range, then (count, amount) for each card group; the simulator's card is a
        # Mastercard
        groups = b"".join(
            bytes([len(paid) if g == "mastercard" else 0])
            + bcd_encode(total if g == "mastercard" else 0, 6)
            for g in m.TOTALS_GROUPS
        )
        totals = Bmp(0x60, bcd_encode(min(receipts), 2) + bcd_encode(max(receipts), 2) + groups)
        await self.send_expect_ack(
            m.status_information([Bmp(0x27, b"\x00"), m.bmp_amount(total), totals])
        )
        self.sim.state.transactions.clear()
        await self.send_expect_ack(m.completion())

    async def read_card(self, _cmd: m.Message) -> None:
        if self.sim.config.tap_required:
            await self._read_tapped_card()
            return
        outcome = self._next_outcome()
        await self.send(m.ack())
        if not await self._wait_card() or outcome in ("timeout", "card_removed"):
            await self.send_expect_ack(m.abort_pt(0x6C))
            return
        app = Tlv(0x60, children=(Tlv(0x43, bytes.fromhex("A0000000041010")),))
        await self.send_expect_ack(
            m.status_information(
                [Bmp(0x27, b"\x00"), m.pan_bmp(self.sim.config.pan), Bmp(0x06, encode_tlv([app]))]
            )
        )

    async def _read_tapped_card(self) -> None:
        """Wait (up to a minute) for a tap, or the ECR's abort (06 B0)."""
        await self.send(m.ack())
        for _ in range(1200):
            incoming = await self.receive(0.05)
            if incoming is not None and incoming.command == Command.ABORT:
                await self.send(m.ack())
                await self.send_expect_ack(m.abort_pt(0x6C))
                return
            if self.sim.state.taps:
                self.sim.state.taps -= 1
                app = Tlv(0x60, children=(Tlv(0x43, bytes.fromhex("A0000000041010")),))
                await self.send_expect_ack(
                    m.status_information(
                        [
                            Bmp(0x27, b"\x00"),
                            m.pan_bmp(self.sim.config.pan),
                            Bmp(0x06, encode_tlv([app])),
                        ]
                    )
                )
                return
        await self.send_expect_ack(m.abort_pt(0x6C))

    async def repeat_receipt(self, _cmd: m.Message) -> None:
        await self.send(m.ack())
        last = self.sim.state.last_result
        if not last:
            await self.send_expect_ack(m.abort_pt(0x83))
            return
        await self.send_expect_ack(
            m.status_information([Bmp(n, bytes.fromhex(v)) for n, v in last])
        )
        await self.send_expect_ack(m.completion())
