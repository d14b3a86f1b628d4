"""The PTP Sender interface the gateway serves, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
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
    host.handle(
        e.TerminalResultArrived(
            session_id=sid,
            event_id="r",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref="3",
            card={"masked_pan": "541333******0074"},
        )
    )
    clock.advance(60)
    host.handle(e.ChargerStarted(sid, "st", 0))
    clock.advance(1800)
    host.handle(e.ChargerStopped(session_id=sid, event_id="sp", meter_wh=7000))
    host.handle(
        e.TerminalResultArrived(
            session_id=sid,
            event_id="c",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=None,
            ref="4",
        )
    )
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
    assert isinstance(site._server, asyncio.Server)
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
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


async def test_facs_are_listed_paginated_and_fetched(
    server: tuple[str, Store, aiohttp.ClientSession],
) -> None:
    base, _store, http = server
    url = f"{base}/ocpi/ptp/2.3.0/payments/financial-advice-confirmations"
    headers = {"Authorization": "Token " + __import__("base64").b64encode(b"token-b").decode()}
    async with http.get(url, params={"limit": "2"}, headers=headers) as r:
        body = await r.json()
        assert (
            r.headers["X-Total-Count"] == "3"
            and r.headers["X-Limit"] == "2"
            and 'rel="next"' in r.headers["Link"]
        )
    assert [f["id"] for f in body["data"]] == ["s0", "s1"]
    for fac in body["data"]:
        parsed = FinancialAdviceConfirmation.model_validate(fac)
        assert (
            parsed.capture_status_code == "SUCCESS"
            and parsed.authorization_reference == f"EVP-{fac['id']}"
        )
    client = OcpiClient(http, "token-b")
    second = await client.request("GET", f"{url}?offset=2&limit=2")
    assert [f["id"] for f in second.data] == ["s2"]
    one = await client.request("GET", f"{url}/s1")
    assert one.data["id"] == "s1"
    filtered = await client.request("GET", f"{url}?date_from=2030-01-01T00:00:00Z")
    assert filtered.data == []


async def test_cpo_assigns_locations_and_deactivates(
    server: tuple[str, Store, aiohttp.ClientSession],
) -> None:
    base, store, http = server
    client = OcpiClient(http, "token-b")
    terminals = f"{base}/ocpi/ptp/2.3.0/payments/terminals"
    listed = await client.request("GET", terminals)
    assert [Terminal.model_validate(t).terminal_id for t in listed.data] == ["DE-SITE-t1"]
    await client.request(
        "PATCH",
        f"{terminals}/DE-SITE-t1",
        {"location_ids": ["LOC1"], "evse_uids": ["E1"], "last_updated": "2026-01-05T10:00:00Z"},
    )
    one = await client.request("GET", f"{terminals}/DE-SITE-t1")
    assert (
        one.data["location_ids"] == ["LOC1"]
        and one.data["evse_uids"] == ["E1"]
        and one.data["reference"] == "52523535"
    )
    await client.request("POST", f"{terminals}/DE-SITE-t1/deactivate")
    assert store.terminals()[0]["data"]["ocpi"]["active"] is False
    await client.request(
        "POST",
        f"{terminals}/activate",
        {
            "terminal_id": "DE-SITE-t1",
            "customer_reference": "ACME",
            "last_updated": "2026-01-05T11:00:00Z",
        },
    )
    ocpi = store.terminals()[0]["data"]["ocpi"]
    assert (
        ocpi["active"] is True
        and ocpi["customer_reference"] == "ACME"
        and ocpi["location_ids"] == ["LOC1"]
    )
    announced = [m.payload for m in store.outbox.list() if m.kind == "terminal.post"][-1]
    assert announced["terminal_id"] == "DE-SITE-t1" and announced["location_ids"] == [
        "LOC1"
    ]  # POSTed back to the CPO
    kinds = [j["kind"] for j in store.journal("t1")]
    assert kinds[-3:] == ["terminal.patch", "terminal.deactivated", "terminal.activated"]
    with pytest.raises(Exception, match="HTTP 404"):
        await client.request("GET", f"{terminals}/nope")


def _auth(token: str = "token-b") -> dict[str, str]:  # noqa: S107 - the test's token B
    return {"Authorization": "Token " + __import__("base64").b64encode(token.encode()).decode()}


@pytest.mark.parametrize(
    ("method", "path", "body", "token", "status"),
    [
        ("GET", "/ocpi/versions", None, "token-b", 200),
        ("GET", "/ocpi/2.3.0", None, "token-b", 200),
        ("GET", "/ocpi/versions", None, "wrong", 401),
        ("GET", "/ocpi/ptp/2.3.0/payments/terminals", None, "token-b", 200),
        ("GET", "/ocpi/ptp/2.3.0/payments/terminals/nope", None, "token-b", 404),
        ("PUT", "/ocpi/ptp/2.3.0/payments/terminals/DE-SITE-t1", b"{not json", "token-b", 400),
        ("GET", "/ocpi/ptp/2.3.0/payments/financial-advice-confirmations/s1", None, "token-b", 200),
        ("POST", "/ocpi/ptp/2.3.0/cdrs", b"{}", "token-b", 400),
        ("GET", "/ocpi/no/such/path", None, "token-b", 404),
        ("DELETE", "/ocpi/versions", None, "token-b", 405),
    ],
)
async def test_every_answer_echoes_the_message_ids(
    server: tuple[str, Store, aiohttp.ClientSession],
    method: str,
    path: str,
    body: bytes | None,
    token: str,
    status: int,
) -> None:
    base, _store, http = server
    ids = {"X-Request-ID": "req-123", "X-Correlation-ID": "corr-456"}
    async with http.request(method, base + path, data=body, headers={**_auth(token), **ids}) as r:
        assert r.status == status
        assert (r.headers["X-Request-ID"], r.headers["X-Correlation-ID"]) == ("req-123", "corr-456")
        envelope = await r.json()
        assert (
            "status_code" in envelope and "timestamp" in envelope
        )  # the OCPI envelope, errors included


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"last_updated": 7}', "last_updated"),  # a number is not a DateTime
        ('{"location_ids": "LOC1", "last_updated": "2026-01-05T10:00:00Z"}', "location_ids"),
        ('{"location_ids": [1], "last_updated": "2026-01-05T10:00:00Z"}', "location_ids.0"),
        (
            '{"customer_reference": "' + "x" * 37 + '", "last_updated": "2026-01-05T10:00:00Z"}',
            "customer_reference",
        ),
        ("[" * 5000 + "]" * 5000, "nested"),
        ('{"a":' * 20 + "1" + "}" * 20, "nested"),
    ],
    ids=[
        "datetime-as-number",
        "list-as-string",
        "int-in-list",
        "too-long",
        "deep-list",
        "deep-object",
    ],
)
async def test_bad_input_is_refused_with_2001_never_a_500(
    server: tuple[str, Store, aiohttp.ClientSession], body: str, why: str
) -> None:
    base, store, http = server
    before = store.terminals()[0]["data"]
    url = f"{base}/ocpi/ptp/2.3.0/payments/terminals/DE-SITE-t1"
    async with http.put(url, data=body.encode(), headers=_auth()) as r:
        answer = await r.json()
    assert r.status == 400 and answer["status_code"] == 2001 and why in answer["status_message"]
    assert store.terminals()[0]["data"] == before  # nothing stored


async def test_a_body_too_large_is_refused(
    server: tuple[str, Store, aiohttp.ClientSession],
) -> None:
    base, _store, http = server
    big = b'{"customer_reference": "' + b"x" * (300 * 1024) + b'"}'
    async with http.put(
        f"{base}/ocpi/ptp/2.3.0/payments/terminals/DE-SITE-t1", data=big, headers=_auth()
    ) as r:
        answer = await r.json()
    assert r.status == 413 and answer["status_code"] == 2001


async def test_activation_by_reference_only(
    server: tuple[str, Store, aiohttp.ClientSession],
) -> None:
    base, store, http = server
    client = OcpiClient(http, "token-b")
    terminals = f"{base}/ocpi/ptp/2.3.0/payments/terminals"
    # The CPO knows the terminal only by the reference the OEM gave it (here: the terminal's own id).
    await client.request(
        "POST",
        f"{terminals}/activate",
        {
            "reference": "52523535",
            "address": "Hauptstr. 1",
            "city": "Berlin",
            "location_ids": ["LOC9"],
        },
    )
    one = await client.request("GET", f"{terminals}/DE-SITE-t1")
    assert (
        one.data["reference"] == "52523535"
        and one.data["location_ids"] == ["LOC9"]
        and one.data["city"] == "Berlin"
    )
    # A reference of the CPO's own is kept and served back from then on.
    await client.request("POST", f"{terminals}/activate", {"reference": "52523535"})
    store_ref = "OEM-SN-0042"
    await client.request(
        "POST", f"{terminals}/activate", {"terminal_id": "DE-SITE-t1", "reference": store_ref}
    )
    assert (await client.request("GET", f"{terminals}/DE-SITE-t1")).data["reference"] == store_ref
    await client.request(
        "POST", f"{terminals}/activate", {"reference": store_ref, "city": "Potsdam"}
    )  # by it now
    assert (await client.request("GET", f"{terminals}/DE-SITE-t1")).data["city"] == "Potsdam"
    announced = [m.payload for m in store.outbox.list() if m.kind == "terminal.post"][-1]
    assert announced["terminal_id"] == "DE-SITE-t1" and announced["reference"] == store_ref
    with pytest.raises(
        Exception, match=r"HTTP 404.*no terminal of ours matches reference 'UNKNOWN'"
    ):
        await client.request("POST", f"{terminals}/activate", {"reference": "UNKNOWN"})
    with pytest.raises(Exception, match="HTTP 400"):
        await client.request(
            "POST", f"{terminals}/activate", {"city": "nowhere"}
        )  # neither id nor reference


def _cdr(cdr_id: str, **changes: object) -> dict[str, object]:
    cdr: dict[str, object] = {
        "country_code": "DE",
        "party_id": "CPO",
        "id": cdr_id,
        "start_date_time": "2026-01-05T10:00:00Z",
        "end_date_time": "2026-01-05T11:00:00Z",
        "currency": "EUR",
        "total_cost": {"before_taxes": 3.5},
        "total_energy": 7.0,
        "last_updated": "2026-01-05T11:00:00Z",
    }
    return {**cdr, **changes}


async def _post_cdr(
    base: str, http: aiohttp.ClientSession, body: bytes, request_id: str
) -> tuple[int, dict[str, object]]:
    headers = {**_auth("token-b"), "X-Request-ID": request_id, "Content-Type": "application/json"}
    async with http.post(f"{base}/ocpi/ptp/2.3.0/cdrs", data=body, headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"total_cost": {"excl_vat": "abc"}}, "excl_vat"),
        ({"total_cost": {"excl_vat": 1.0, "incl_vat": "1.19"}}, "incl_vat"),
        ({"total_energy": 10**400}, "out of range"),
        ({"total_cost": {"excl_vat": 10**400}}, "out of range"),
    ],
    ids=["221-price-as-text", "221-incl-vat-as-text", "401-digit-energy", "401-digit-price"],
)
async def test_a_hostile_cdr_is_a_clear_ocpi_error_and_nothing_is_stored(
    server: tuple[str, Store, aiohttp.ClientSession], changes: dict[str, object], why: str
) -> None:
    """Issue 27: excl_vat "abc" answered 500; a 401-digit total_energy was stored as inf."""
    base, store, http = server
    status, answer = await _post_cdr(base, http, json.dumps(_cdr("C1", **changes)).encode(), "r1")
    assert status == 400 and answer["status_code"] == 2001 and why in str(answer["status_message"])
    assert store.inbox("cdr") == []


async def test_cdrs_are_deduplicated_on_their_own_id_not_on_the_request_id(
    server: tuple[str, Store, aiohttp.ClientSession],
) -> None:
    base, store, http = server
    first = json.dumps(_cdr("C1")).encode()
    assert (await _post_cdr(base, http, first, "same-request-id"))[0] == 201
    # a second, different CDR under the same X-Request-ID is kept, not silently dropped
    second = json.dumps(_cdr("C2", total_energy=9.5)).encode()
    assert (await _post_cdr(base, http, second, "same-request-id"))[0] == 201
    # the first CDR again, under a new X-Request-ID, is the same CDR: stored once
    assert (await _post_cdr(base, http, first, "another-request-id"))[0] == 201
    stored = sorted(str(m["payload"]["id"]) for m in store.inbox("cdr"))
    assert stored == ["C1", "C2"]
    for message in store.inbox("cdr"):
        json.loads(json.dumps(message["payload"], allow_nan=False))  # valid JSON, no inf


async def test_session_pushes_are_deduplicated_on_the_session_and_its_state(
    server: tuple[str, Store, aiohttp.ClientSession],
) -> None:
    """Two different sessions (or two states of one) under one X-Request-ID are both kept."""
    base, store, http = server

    def session(sid: str, updated: str) -> bytes:
        return json.dumps(
            {
                "country_code": "DE",
                "party_id": "CPO",
                "id": sid,
                "start_date_time": "2026-01-05T10:00:00Z",
                "kwh": 1.5,
                "auth_method": "COMMAND",
                "location_id": "LOC1",
                "evse_uid": "E1",
                "connector_id": "1",
                "currency": "EUR",
                "status": "ACTIVE",
                "last_updated": updated,
            }
        ).encode()

    headers = {**_auth("token-b"), "X-Request-ID": "same", "Content-Type": "application/json"}
    sent = [
        ("S1", "2026-01-05T10:01:00Z"),
        ("S2", "2026-01-05T10:01:00Z"),
        ("S1", "2026-01-05T10:02:00Z"),
        ("S1", "2026-01-05T10:02:00Z"),  # the same state again: stored once
    ]
    for sid, updated in sent:
        url = f"{base}/ocpi/ptp/2.3.0/sessions/DE/CPO/{sid}"
        async with http.put(url, data=session(sid, updated), headers=headers) as r:
            assert r.status == 200, await r.text()
    stored = sorted(
        (m["payload"]["id"], m["payload"]["last_updated"]) for m in store.inbox("session")
    )
    assert stored == sorted(set(sent))
