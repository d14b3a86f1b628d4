"""Adversarial review of issue 30: a scripted PT on loopback TCP, answering the driver with the
exact bytes a test gives (for forms the simulator cannot play)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from drivers.base import Outcome
from drivers.money import Money
from drivers.transport.tcp import TcpTransport
from drivers.zvt.apdu import _split
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal

ACK = bytes.fromhex("800000")
REGISTERED = [ACK, bytes.fromhex("060f00")]

Script = Callable[[int], list[bytes]]  # ECR command (cls<<8|instr) -> the PT's answers


@asynccontextmanager
async def scripted_pt(script: Script) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        pending: list[bytes] = []
        try:
            while True:
                apdu, used = _split(buf, 0)
                if apdu is None:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return
                    buf += chunk
                    continue
                del buf[:used]
                command = apdu.cls << 8 | apdu.instr
                if command == 0x8000:  # the ECR acknowledging: send the next message
                    if pending:
                        writer.write(pending.pop(0))
                    continue
                answers = list(script(command))
                writer.write(answers.pop(0))  # 80 00 / 84 xx
                if answers:
                    writer.write(answers.pop(0))
                pending = answers
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def driver(port: int, **opts: object) -> ZvtTerminal:
    options = ZvtOptions(**{"password": "123456", "t3": 1.0, "t4": 1.5, **opts})  # type: ignore[arg-type]
    return ZvtTerminal("t1", TcpTransport("127.0.0.1", port), serial_framing=False, options=options)


async def test_a_capture_that_ends_without_a_result_is_not_approved() -> None:
    """Pre-existing path, reached more often now that a completion may carry a bare status: a
    money command answered 80 00 then 06 0F with no 04 0F has no booked amount to report."""

    def script(command: int) -> list[bytes]:
        return REGISTERED if command == 0x0600 else [ACK, bytes.fromhex("060f00")]

    async with scripted_pt(script) as port:
        t = driver(port, capture_mode="book_total")
        assert (await t.connect()).approved
        cap = await t.capture("7", Money(5000, "EUR"), Money(1234, "EUR"), "SC-1")
        await t.close()
    assert cap.outcome is not Outcome.APPROVED, cap


async def test_84_00_00_then_a_result_books_the_result() -> None:
    body = bytes.fromhex("2700" + "04000000001234" + "870007" + "0b000001")
    result = bytes([0x04, 0x0F, len(body)]) + body

    def script(command: int) -> list[bytes]:
        if command == 0x0600:
            return REGISTERED
        return [bytes.fromhex("840000"), result, bytes.fromhex("060f00")]

    async with scripted_pt(script) as port:
        t = driver(port)
        await t.connect()
        sale = await t.sale(Money(1234, "EUR"))
        await t.close()
    assert sale.approved and sale.amount == Money(1234, "EUR"), sale
