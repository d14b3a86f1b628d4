"""What the simulated PT does with money: card outcomes, pre-authorisation and its extension,
the completions (partial reversal, book total), reversal and refund, each result acknowledged
or undone, the receipt numbers and its book of transactions."""

from __future__ import annotations

from datetime import UTC, datetime

from drivers.errors import ConnectionLost
from drivers.sim.pt_line import PtLine, _Silenced
from drivers.sim.pt_state import Transaction
from drivers.zvt import messages as m
from drivers.zvt.constants import RECEIPT_NONE, Command
from drivers.zvt.fields import Bmp, Tlv, bcd_encode, encode_tlv


class PtPayments(PtLine):
    async def result_acknowledged(self, result: list[Bmp]) -> bool:
        """An approving 04 0F: the transaction stands only if the ECR acknowledges it in time."""
        cfg = self.sim.config
        if self.serial and cfg.result_ack_lost > 0:
            cfg.result_ack_lost -= 1
            self.losing_ack = True
        try:  # a result the line cannot deliver (refused by NAKs) is unacknowledged too
            await self.send(m.status_information(self._numbered(result)))
            if cfg.on_result is not None and not self.cut:
                cfg.on_result()
            reply = await self.reply(cfg.result_ack_timeout_s)
        except ConnectionLost:
            if cfg.unacked_on_close == "keep":
                self._remember(result)  # it stands: its repeat (06 20) shows it
                raise
            return False  # nobody can acknowledge it now: undone as on a timeout
        acknowledged = reply is not None and reply.command == Command.ACK
        self.sim.state.results_acknowledged += acknowledged
        return acknowledged

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
            if self.sim.config.variants.open_preauth_answer == "bare":
                await self.send_expect_ack(m.abort_pt(0xB8))
                return
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
