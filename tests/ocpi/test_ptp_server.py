"""The PTP Sender interface the gateway serves, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from drivers.base import Outcome
from gateway.ocpi.client import OcpiClient
from gateway.ocpi.models import FinancialAdviceConfirmation, Terminal
from gateway.ocpi.server import PtpServer
from gateway.payments import events as e
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import Clock, policy


def finished_session(host: EngineHost, clock: Clock, sid: str) -> None:
    host.handle(e.CardPresented(sid, "card", "E1", "T1", "EUR"))
    host.handle(e.TerminalResultArrived(sid, "r", "preauthorize", Outcome.APPROVED, 5000, 3,
                                        card={"masked_pan": "541333******0074"}))  # fmt: skip
    clock.advance(60)
    host.handle(e.ChargerStarted(sid, "st", 0))
    clock.advance(1800)
    host.handle(e.ChargerStopped(sid, "sp", 7000))
    host.handle(e.TerminalResultArrived(sid, "c", "capture", Outcome.APPROVED, None, 4))
    clock.advance(60)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Store, aiohttp.ClientSession]]:
    clock = Clock()
    store = Store.open(tmp_path / "p.sqlite3", clock=clock)
    host = EngineHost(store, policy(), clock)
    host.record_terminal("t1", "tcp://10.0.0.5:20007", True, "52523535", "DE-SITE")
    for n in range(3):
        finished_session(host, clock, f"s{n}")
    ptp = PtpServer(store, "token-b", "http://127.0.0.1", "DE-SITE", lambda: datetime.now(UTC))
    runner = web.AppRunner(ptp.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        yield base, store, http
    await runner.cleanup()
    store.close()


async def test_token_b_is_required(server: tuple[str, Store, aiohttp.ClientSession]) -> None:
    base, _store, http = server
    async with http.get(f"{base}/ocpi/versions") as r:
        assert r.status == 401
    reply = await OcpiClient(http, "token-b").request("GET", f"{base}/ocpi/versions")
    assert reply.data[0]["version"] == "2.3.0"


async def test_facs_are_listed_paginated_and_fetched(server: tuple[str, Store, aiohttp.ClientSession]) -> None:
    base, _store, http = server
    url = f"{base}/ocpi/ptp/2.3.0/payments/financial-advice-confirmations"
    headers = {"Authorization": "Token " + __import__("base64").b64encode(b"token-b").decode()}
    async with http.get(url, params={"limit": "2"}, headers=headers) as r:
        body = await r.json()
        assert r.headers["X-Total-Count"] == "3" and r.headers["X-Limit"] == "2" and 'rel="next"' in r.headers["Link"]
    assert [f["id"] for f in body["data"]] == ["s0", "s1"]
    for fac in body["data"]:
        parsed = FinancialAdviceConfirmation.model_validate(fac)
        assert parsed.capture_status_code == "SUCCESS" and parsed.authorization_reference == f"EVP-{fac['id']}"
    client = OcpiClient(http, "token-b")
    second = await client.request("GET", f"{url}?offset=2&limit=2")
    assert [f["id"] for f in second.data] == ["s2"]
    one = await client.request("GET", f"{url}/s1")
    assert one.data["id"] == "s1"
    filtered = await client.request("GET", f"{url}?date_from=2030-01-01T00:00:00Z")
    assert filtered.data == []


async def test_cpo_assigns_locations_and_deactivates(server: tuple[str, Store, aiohttp.ClientSession]) -> None:
    base, store, http = server
    client = OcpiClient(http, "token-b")
    terminals = f"{base}/ocpi/ptp/2.3.0/payments/terminals"
    listed = await client.request("GET", terminals)
    assert [Terminal.model_validate(t).terminal_id for t in listed.data] == ["DE-SITE-t1"]
    await client.request("PATCH", f"{terminals}/DE-SITE-t1", {"location_ids": ["LOC1"], "evse_uids": ["E1"],
                                                              "last_updated": "2026-01-05T10:00:00Z"})  # fmt: skip
    one = await client.request("GET", f"{terminals}/DE-SITE-t1")
    assert (
        one.data["location_ids"] == ["LOC1"] and one.data["evse_uids"] == ["E1"] and one.data["reference"] == "52523535"
    )
    await client.request("POST", f"{terminals}/DE-SITE-t1/deactivate")
    assert store.terminals()[0]["data"]["ocpi"]["active"] is False
    await client.request("POST", f"{terminals}/activate", {"terminal_id": "DE-SITE-t1", "customer_reference": "ACME",
                                                           "last_updated": "2026-01-05T11:00:00Z"})  # fmt: skip
    ocpi = store.terminals()[0]["data"]["ocpi"]
    assert ocpi["active"] is True and ocpi["customer_reference"] == "ACME" and ocpi["location_ids"] == ["LOC1"]
    announced = [m.payload for m in store.outbox.list() if m.kind == "terminal.post"][-1]
    assert announced["terminal_id"] == "DE-SITE-t1" and announced["location_ids"] == ["LOC1"]  # POSTed back to the CPO
    kinds = [j["kind"] for j in store.journal("t1")]
    assert kinds[-3:] == ["terminal.patch", "terminal.deactivated", "terminal.activated"]
    with pytest.raises(Exception, match="HTTP 404"):
        await client.request("GET", f"{terminals}/nope")
