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
from dataclasses import asdict
from typing import Literal

from drivers.errors import ConnectionLost
from drivers.sim.ports import Port
from drivers.sim.pt_line import _Silenced, _Unplugged
from drivers.sim.pt_payments import PtPayments
from drivers.sim.pt_state import SimConfig, SimState, Transaction
from drivers.zvt import messages as m
from drivers.zvt.constants import Command
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import Bmp, Tlv, bcd_encode, encode_tlv, find_tlv

__all__ = ["SimConfig", "SimState", "SimTerminal", "Transaction"]


_LOGGER = logging.getLogger(__name__)


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


class _Session(PtPayments):
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
        # BMP 60: the batch's first and last receipt (in the order they were given: the receipt
        # counter wraps from 9999 to 1, so after a wrap the first is the larger number), then
        # (count, amount) for each card group; the simulator's card is a Mastercard.
        receipts = [t.receipt for t in batch] or [0]
        count = _totals_count(len(paid), self.sim.config.variants.totals_count)
        groups = b"".join(
            bytes([count if g == "mastercard" else 0])
            + bcd_encode(total if g == "mastercard" else 0, 6)
            for g in m.TOTALS_GROUPS
        )
        totals = Bmp(0x60, bcd_encode(receipts[0], 2) + bcd_encode(receipts[-1], 2) + groups)
        await self.send_expect_ack(
            m.status_information([Bmp(0x27, b"\x00"), m.bmp_amount(total), totals])
        )
        if self.sim.config.on_end_of_day is not None:
            self.sim.config.on_end_of_day(batch)
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


def _totals_count(payments: int, overflow: Literal["wrap", "cap"]) -> int:
    """BMP 60's count of one card group: a single binary byte (the spec's individual totals),
    whatever the number of payments. A one-byte counter wraps (300 payments are sent as 44);
    the "cap" variant saturates at 255 (docs/ZVT-VARIANTS.md, section 6: no source says which a
    real terminal does). Either way the count alone no longer proves the number of
    payments past 255: the 6-byte BCD turnover is the evidence (gateway/payments/reconcile.py
    compares counts modulo 256)."""
    return min(payments, 0xFF) if overflow == "cap" else payments % 0x100
