"""The OCPI server (reachable by the CPO, so from the network) behind the same connection guard
as the local API (issue 27): does a flood of idle connections cost the CPO its requests?"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from gateway.ocpi.server import PtpServer
from gateway.runtime.connections import ConnectionGuard, GuardedSite
from gateway.store import Store
from tests.ocpi.test_ptp_server import _cdr

CAP = 8


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[int, ConnectionGuard, Store]]:
    store = Store.open(tmp_path / "p.sqlite3")
    ptp = PtpServer(store, "token-b", "http://127.0.0.1", "DE-SITE", lambda: datetime.now(UTC))
    runner = web.AppRunner(ptp.app(), access_log=None)
    await runner.setup()
    guard = ConnectionGuard(max_connections=CAP, header_timeout_s=5.0)
    site = GuardedSite(runner, "127.0.0.1", 0, guard)
    await site.start()
    yield site.port, guard, store
    await runner.cleanup()
    store.close()


async def test_a_flood_of_idle_connections_never_evicts_a_cpo_request_in_flight(
    guarded: tuple[int, ConnectionGuard, Store],
) -> None:
    port, _guard, store = guarded
    body = json.dumps(_cdr("F1")).encode()
    token = base64.b64encode(b"token-b").decode()
    head = (
        "POST /ocpi/ptp/2.3.0/cdrs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Token {token}\r\nX-Request-ID: r1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body[:10])  # the CPO's uplink is slow: the rest comes a moment later
    await writer.drain()
    await asyncio.sleep(0.2)
    flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3 * CAP)]
    await asyncio.sleep(0.2)
    try:
        writer.write(body[10:])
        await writer.drain()
        async with asyncio.timeout(5):
            line = await reader.readline()
    except (ConnectionError, OSError):
        line = b""
    finally:
        writer.close()
        for _, w in flood:
            w.close()
    assert b" 201 " in line, line
    assert [m["payload"]["id"] for m in store.inbox("cdr")] == ["F1"]
