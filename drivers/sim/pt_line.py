"""How the simulated PT talks on its line: frames out with the configured line faults (NAK, bad
CRC, noise, a cut line), the ECR's messages in, and a command that arrives while the PT is
master refused as busy (or ignored, as some terminals do)."""

from __future__ import annotations

import asyncio
from collections import deque

from drivers.errors import ConnectionLost
from drivers.sim.ports import Port
from drivers.sim.pt_state import Simulator
from drivers.zvt import messages as m
from drivers.zvt.apdu import Apdu
from drivers.zvt.constants import Command
from drivers.zvt.link import ApduReceived, LinkFailed, SerialLink, StreamLink
from drivers.zvt.serial_framing import ACK, NAK

_COMMAND_CLASSES = (0x05, 0x06, 0x08)  # ECR commands, as opposed to answers (80 00, 84 xx)


class _Silenced(Exception):
    """Power loss: stop answering for the rest of this sequence."""


class _Unplugged(ConnectionLost):
    """The line cut in the middle of an exchange (``SimConfig.unplug_at``)."""


class PtLine:
    """One connection's line; the PT's handlers are the parts that subclass it."""

    def __init__(self, sim: Simulator, port: Port, serial: bool) -> None:
        self.sim, self.port, self.serial = sim, port, serial
        self.link: SerialLink | StreamLink = SerialLink() if serial else StreamLink()
        self.losing_ack = False  # the next ACK byte is eaten by the line (result_ack_lost)
        self.inbox: deque[Apdu] = deque()
        self.loop = asyncio.get_running_loop()
        self.exchange, self.sent = 0, 0  # the command being answered; the messages sent for it
        self.cut = False  # unplugged: nothing goes out, nothing comes in, until the exchange ends

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
