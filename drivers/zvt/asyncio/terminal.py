"""``ZvtTerminal``: the ZVT implementation of ``drivers.base.PaymentTerminal``.

It turns ZVT sequences into typed ``TerminalResult``s; the engine never sees a byte. A lost
line after the terminal accepted a money command gives ``Outcome.UNKNOWN`` (with whatever
receipt number was already learned): the caller recovers with ``open_preauthorizations`` or
``last_result``, never by repeating the command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from drivers.base import Outcome, PersistHook, TerminalResult
from drivers.errors import ConnectionLost, DriverError, ProtocolError
from drivers.money import Money, currency
from drivers.transport.base import Transport
from drivers.zvt import messages as m
from drivers.zvt.asyncio.client import OnResult, SequenceOutcome, ZvtClient
from drivers.zvt.asyncio.results import ResultReader
from drivers.zvt.charset import DEFAULT_CHARSET
from drivers.zvt.constants import Command
from drivers.zvt.fields import Tlv
from drivers.zvt.line_quiet import LINE_QUIET_S
from drivers.zvt.refs import receipt_number

_LOGGER = logging.getLogger(__name__)


# Config byte: ECR prints payment+admin receipts as text (02|04|80), wants intermediate status
# (08), controls payment and administration (10|20).
DEFAULT_CONFIG_BYTE = 0xBE


@dataclass(frozen=True, slots=True)
class ZvtOptions:
    password: str = "000000"  # noqa: S105 - ZVT factory default; real ones come from config secrets
    currency: str = "EUR"
    config_byte: int = DEFAULT_CONFIG_BYTE
    # How a capture is sent: 06 23 releasing the unused part, or 06 24 booking the used part.
    # Terminals differ (and differ in which amount their result echoes): a per-terminal setting.
    capture_mode: Literal["partial_reversal", "book_total"] = "partial_reversal"
    incremental: bool = False  # the terminal accepts reservation extensions (06 22 with BMP 0B)
    reference_prefix: str = "EV"  # BMP60 reference identifier (two letters)
    # The terminal's text character set (drivers/zvt/charset.py); TLV 14 in a message wins.
    charset: str = DEFAULT_CHARSET
    # What a reservation extension's answer (BMP 04) carries: the amount just added, or the
    # hold's new total (terminals differ: docs/ZVT-VARIANTS.md). An answer that contradicts the
    # setting is an unknown outcome, never a guess.
    topup_amount: Literal["increment", "total"] = "increment"
    t3: float = 5.0
    t4: float = 180.0
    # Serial only: silence that proves the PT has no frame of an earlier ECR's sequence left
    # to send (longer than its T2), waited after a line is opened when the PT answers the
    # opening probe, or after a registration that was not answered as one
    # (drivers/zvt/line_quiet.py, docs/ZVT-VARIANTS.md 8).
    line_quiet_s: float = LINE_QUIET_S


async def _no_registration_answer(_result: m.Message) -> None:
    """A 04 0F inside a registration is the stale tail of another ECR's sequence: stop before
    it is acknowledged (an ACK tells the PT it was delivered and the dead run's transaction
    stands, unrecorded); unacknowledged, the PT reverses it (ZVT 2.2.8, docs/ZVT-VARIANTS.md 8)."""
    raise ProtocolError("a result (04 0F) is no answer to a registration")


class ZvtTerminal(ResultReader):
    def __init__(
        self, name: str, transport: Transport, *, serial_framing: bool, options: ZvtOptions
    ) -> None:
        self.name = name
        self.options = options
        self._currency = currency(options.currency)
        self.client = ZvtClient(
            transport,
            serial_framing=serial_framing,
            t3=options.t3,
            t4=options.t4,
            charset=options.charset,
            line_quiet_s=options.line_quiet_s,
        )
        self.terminal_id: str | None = None
        self._hold_totals: dict[str, Money] = {}  # ref -> what it holds, as last answered
        self._connecting = asyncio.Lock()

    async def connect(self) -> TerminalResult:
        """Open the line and register (06 00), asking for receipts as 06 D3 text blocks.
        One opening at a time: on a serial line it waits for silence first (up to
        ``LINE_PROBE_S`` on a quiet line), and a command issued meanwhile waits for it
        instead of opening the line a second time under it."""
        async with self._connecting:
            return await self._connect()

    async def _connect(self) -> TerminalResult:
        try:
            await self.client.open()
        except ProtocolError as exc:  # the line never fell quiet (bounded): try again later
            return TerminalResult("register", Outcome.ERROR, str(exc), unreachable=True)
        result = await self._run("register", self._registration(), ensure=False)
        if result.terminal_id:
            self.terminal_id = result.terminal_id
        if result.outcome is not Outcome.APPROVED and self.client.link_t2:
            # Serial only: a new TCP connection carries nothing of an old one. Refused,
            # ignored, or answered by something that is no registration answer (the stale end
            # of a killed ECR's sequence): the PT may still be running a sequence of its own.
            # No command goes out on this registration: the next one opens the line again and
            # waits for the full quiet period first (docs/ZVT-VARIANTS.md, 8).
            self.client.unsettled, self.client.connected = True, False
        return result

    async def close(self) -> None:
        await self.client.close()

    def _registration(self) -> m.Message:
        return m.registration(
            self.options.password,
            self.options.config_byte,
            self._currency.numeric,
            tlv=[Tlv(0x26, children=(Tlv(0x0A, b"\x06\xd3"),))],
        )

    async def preauthorize(
        self, amount: Money, reference: str, persist: PersistHook | None = None
    ) -> TerminalResult:
        self._check(amount)
        command = m.pre_authorisation(
            amount.minor,
            self._currency.numeric,
            tlv=[m.reference_tlv(self.options.reference_prefix, reference)],
        )
        result = await self._run(
            "preauthorize", command, persist=persist, money=True, requested=amount
        )
        if result.approved and result.ref is not None and result.amount is not None:
            self._hold_totals[result.ref] = result.amount
        return result

    async def add_hold(
        self,
        first_ref: str,
        first_trace: int | None,
        amount: Money,
        reference: str,
        persist: PersistHook | None = None,
    ) -> TerminalResult:
        """06 22 with the first reservation's trace number (BMP 0B): a reservation extension."""
        if not self.options.incremental:
            return TerminalResult(
                "add_hold",
                Outcome.ERROR,
                f"terminal {self.name} cannot add to a hold (incremental off)",
            )
        if first_trace is None:
            return TerminalResult(
                "add_hold", Outcome.ERROR, f"hold {first_ref} has no trace number to extend"
            )
        self._check(amount)
        command = m.pre_authorisation(
            amount.minor,
            self._currency.numeric,
            tlv=[m.reference_tlv(self.options.reference_prefix, reference)],
            trace=first_trace,
        )
        hook = persist

        async def adjusted(result: TerminalResult) -> None:
            if hook is not None:
                await hook(self._added(result, amount, first_ref))

        raw = await self._run(
            "add_hold", command, persist=adjusted if hook else None, money=True, requested=amount
        )
        result = self._added(raw, amount, first_ref)
        if result.approved and result.amount is not None and raw.ref is not None:
            total = raw.amount if raw.ref != first_ref else None
            if total is None:
                before = self._hold_totals.get(first_ref, Money(0, amount.currency))
                total = Money(before.minor + result.amount.minor, amount.currency)
            self._hold_totals[raw.ref] = total
        return result

    def _added(self, result: TerminalResult, asked: Money, first_ref: str) -> TerminalResult:
        """The amount a top-up added, read as this terminal model reports it (``topup_amount``).
        A new hold (its own receipt) answers its own amount. An answer larger than the request
        cannot be an increment; under "total" only the known hold plus the amount asked is a
        total: anything else is an unknown outcome (the engine recovers), never a guessed
        amount."""
        echo = result.amount
        if not result.approved or echo is None or result.ref != first_ref:
            return result
        if self.options.topup_amount == "increment":
            if echo <= asked:
                return result
            why = f"the top-up answer carries {echo}, more than the {asked} asked: a new total?"
            return replace(result, outcome=Outcome.UNKNOWN, message=why, amount=None)
        # Only the full total is read: an increment answer (at most the amount asked) can never
        # equal hold + asked, whereas a smaller "total" could be either reading (10.00 + 30.00
        # answered 30.00: an increment of 30 or a total after 20). ZVT has no partial approval
        # of a reservation extension (1F70 is an 06 01 tag; we never send it), so any other
        # answer is not one this setting can read (docs/ZVT-VARIANTS.md, 4).
        before = self._hold_totals.get(first_ref)
        if before is None or echo.minor != before.minor + asked.minor:
            why = (
                f"the top-up answer's total {echo} is not the hold {before} plus the {asked} asked"
            )
            return replace(result, outcome=Outcome.UNKNOWN, message=why, amount=None)
        details = {**result.details, "hold_total": str(echo)}
        return replace(result, amount=asked, details=details)

    async def capture(
        self,
        ref: str,
        held: Money,
        amount: Money,
        reference: str,
        persist: PersistHook | None = None,
        exact: bool = False,
    ) -> TerminalResult:
        """Book ``amount`` of the hold and release the rest (partial reversal or book total;
        ``exact`` always books the total: 06 23 would release a difference from a wrong hold)."""
        self._check(held)
        self._check(amount)
        if amount > held:
            raise DriverError(f"capture {amount} exceeds the hold {held}; refusing to send it")
        if amount.minor == 0:
            return await self.release(ref, held, persist)
        receipt_no = receipt_number(ref)
        tlv = [m.reference_tlv(self.options.reference_prefix, reference)]
        if self.options.capture_mode == "book_total" or exact:
            command = m.book_total(receipt_no, amount.minor, self._currency.numeric, tlv=tlv)
        else:
            command = m.partial_reversal(
                receipt_no, held.minor - amount.minor, self._currency.numeric, tlv=tlv
            )
        return await self._run("capture", command, persist=persist, money=True, requested=amount)

    async def release(
        self, ref: str, held: Money, persist: PersistHook | None = None
    ) -> TerminalResult:
        self._check(held)
        command = m.pre_auth_reversal(receipt_number(ref), self._currency.numeric)
        return await self._run(
            "release", command, persist=persist, money=True, requested=Money(0, held.currency)
        )

    async def sale(self, amount: Money, persist: PersistHook | None = None) -> TerminalResult:
        """06 01: a plain payment, booked at once (not used by the charging flow)."""
        self._check(amount)
        command = m.authorization(amount.minor, self._currency.numeric)
        return await self._run("sale", command, persist=persist, money=True, requested=amount)

    async def refund(self, amount: Money, persist: PersistHook | None = None) -> TerminalResult:
        """06 31: give money back to the card presented (after End-of-Day a reversal is
        impossible)."""
        self._check(amount)
        command = m.refund(self.options.password, amount.minor, self._currency.numeric)
        return await self._run("refund", command, persist=persist, money=True, requested=amount)

    async def reverse(self, ref: str, persist: PersistHook | None = None) -> TerminalResult:
        command = m.reversal(self.options.password, receipt_number(ref))
        return await self._run("reverse", command, persist=persist, money=True)

    async def read_card(self, timeout_s: int) -> TerminalResult:
        command = m.read_card(timeout_s, tlv=[Tlv(0x1F15, b"\xd0"), Tlv(0x1F60, b"\x07")])
        return await self._run("read_card", command, t3=self.options.t3, completes_on_result=True)

    async def abort(self) -> TerminalResult:
        if self.client.busy:
            sent = await self.client.request_abort()
            outcome = Outcome.APPROVED if sent else Outcome.ERROR
            text = (
                "abort sent to the running sequence"
                if sent
                else "the running step cannot be aborted now"
            )
            return TerminalResult("abort", outcome, text)
        return await self._run("abort", m.abort(), completes_on_ack=True)

    async def status(self) -> TerminalResult:
        return await self._run("status", m.status_enquiry(self.options.password))

    async def end_of_day(self) -> TerminalResult:
        return await self._run("end_of_day", m.end_of_day(self.options.password))

    async def diagnose(self) -> TerminalResult:
        return await self._run("diagnose", m.diagnosis())

    async def display(self, lines: Sequence[str], seconds: int) -> TerminalResult:
        return await self._run(
            "display",
            m.display_text(list(lines), seconds, charset=self.options.charset),
            completes_on_ack=True,
        )

    async def print_text(self, lines: Sequence[str]) -> TerminalResult:
        command = m.print_text_block(list(lines), charset=self.options.charset)
        return await self._run("print_text", command, completes_on_ack=True)

    async def open_preauthorizations(self) -> TerminalResult:
        """06 23 87 FF FF: which pre-authorisations does the terminal still hold open?"""
        return await self._run("open_preauthorizations", m.enquire_open_preauths())

    async def last_result(self) -> TerminalResult:
        """06 20 (repeat receipt, service bit 0): the terminal's last 04 0F, for resync."""
        return await self._run("last_result", m.repeat_receipt(self.options.password))

    def _check(self, amount: Money) -> None:
        if amount.currency != self._currency.alpha:
            raise DriverError(
                f"terminal {self.name} is registered for {self._currency.alpha}, not "
                f"{amount.currency}"
            )

    async def _run(
        self,
        operation: str,
        command: m.Message,
        *,
        ensure: bool = True,
        persist: PersistHook | None = None,
        money: bool = False,
        requested: Money | None = None,
        t3: float | None = None,
        completes_on_ack: bool = False,
        completes_on_result: bool = False,
    ) -> TerminalResult:
        if ensure and not self.client.connected:
            try:
                async with self._connecting:
                    reconnect = (
                        await self._connect()
                        if not self.client.connected
                        else TerminalResult("register", Outcome.APPROVED, "opened meanwhile")
                    )
            except DriverError as exc:
                return TerminalResult(operation, Outcome.ERROR, str(exc), unreachable=True)
            if reconnect.outcome is not Outcome.APPROVED:
                return TerminalResult(
                    operation,
                    Outcome.ERROR,
                    f"re-registration failed: {reconnect.message}",
                    unreachable=True,
                )

        # a registration's 04 0F is refused unread (it is no answer to it, and never ours)
        on_result: OnResult | None = _no_registration_answer if operation == "register" else None
        if persist is not None:
            hook = persist

            async def on_result(message: m.Message) -> None:
                await hook(self._from_status(operation, message, requested))

        outcome = SequenceOutcome()
        try:
            if self.client.taken_for_a_retransmission(command):
                await self.client.settle()  # a late answer first, if the PT's link repeats one
            if self.client.taken_for_a_retransmission(command):
                await self._separate(operation, command)
            outcome = await self.client.execute(
                command,
                t3=t3,
                completes_on_ack=completes_on_ack,
                completes_on_result=completes_on_result,
                on_result=on_result,
            )
        except (ConnectionLost, ProtocolError) as exc:
            _LOGGER.warning(
                "zvt.link_lost",
                extra={"terminal": self.name, "operation": operation, "error": str(exc)},
            )
            return self._lost(operation, money, str(exc))
        return self._interpret(operation, outcome, money, requested)

    async def _separate(self, operation: str, command: m.Message) -> None:
        """Send another command before ``command``, whose frame the PT acknowledged and never
        answered (it ignored it while master) and which its link would now drop as a
        retransmission. A status enquiry (a registration before a repeated status enquiry):
        it changes nothing at the PT and, if the PT is still master, is ignored or refused
        itself. Never an abort (06 B0): the PT acts on that one while master, ends its old
        sequence and sends 06 1E to an ECR that is no longer in it -- which then answers our
        next command, and every answer after it is one out of step (docs/ZVT-VARIANTS.md, 1).
        Its own outcome does not matter: only that the PT's link has seen another frame."""
        if command.command == Command.STATUS_ENQUIRY:
            separator = self._registration()
        else:
            separator = m.status_enquiry(self.options.password)
        _LOGGER.info(
            "zvt.separated",
            extra={"terminal": self.name, "operation": operation, "before": command.command},
        )
        await self.client.execute(separator)
