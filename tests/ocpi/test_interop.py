"""Each `[upstream.interop]` switch against the embedded CPO's matching quirk: without the
switch the quirky CPO refuses (and the refusal says why), with it the message is delivered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import OcpiRejected
from gateway.ocpi.client import OcpiClient
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.ocpi.pusher import OutboxPusher
from gateway.settings import InteropSettings
from gateway.store import OutboxMessage, Step, Store
from tests.ocpi.test_store_and_forward import outcome


@pytest.fixture
async def cpo() -> AsyncIterator[CpoSimulator]:
    sim = CpoSimulator()
    sim.state.callback = False
    sim.state.tokens.add("token-c")
    await sim.start()
    yield sim
    await sim.stop()


async def drain(store: Store, cpo: CpoSimulator, interop: InteropSettings) -> None:
    """Run the pusher until nothing is pending (delivered or dead-lettered)."""
    async with aiohttp.ClientSession() as http:
        pusher = OutboxPusher(
            store,
            OcpiClient(http, "token-c"),
            cpo.payments_url,
            lambda: datetime.now(UTC),
            backoff_min_s=0.01,
            backoff_max_s=0.02,
            idle_poll_s=0.02,
            interop=interop,
        )
        stopping = asyncio.Event()
        task = asyncio.create_task(pusher.run(stopping))
        try:
            async with asyncio.timeout(15):
                while store.outbox.backlog().pending:
                    await asyncio.sleep(0.02)
        finally:
            stopping.set()
            await task


def terminal_step() -> Step:
    payload = {"terminal_id": "DE-SITE-t1", "reference": "52523535"}
    return Step(
        "t",
        outbox=[
            OutboxMessage("terminal:DE-SITE-t1:x", "terminal:DE-SITE-t1", "terminal.post", payload)
        ],
    )


def shortfall_step() -> Step:
    step = outcome(1)
    payload = {
        **step.outbox[0].payload,
        "price_minor": 5200,
        "captured_minor": 5000,
        "shortfall_minor": 200,
        "owed_minor": 200,
        "price_excl": "43.70",
    }
    return Step(
        "s",
        outbox=[
            OutboxMessage(
                "session-0001:outcome", "session:session-0001", "session.outcome", payload
            )
        ],
    )


@pytest.mark.parametrize("switched", [False, True], ids=["spec", "interop"])
async def test_terminals_by_put(tmp_path: Path, cpo: CpoSimulator, switched: bool) -> None:
    cpo.state.quirks.add("put_terminals")
    store = Store.open(tmp_path / "t.sqlite3")
    store.apply(terminal_step())
    await drain(store, cpo, InteropSettings(terminal_method="PUT" if switched else "POST"))
    if switched:
        assert list(cpo.state.terminals) == ["DE-SITE-t1"]
    else:
        (dead,) = store.outbox.list("dead")
        assert "takes Terminals by PUT" in (dead.last_error or "")


@pytest.mark.parametrize("switched", [False, True], ids=["spec", "interop"])
async def test_no_partial_success(tmp_path: Path, cpo: CpoSimulator, switched: bool) -> None:
    cpo.state.quirks.add("no_partial_success")
    store = Store.open(tmp_path / "p.sqlite3")
    store.apply(shortfall_step())
    await drain(store, cpo, InteropSettings(partial_success=not switched))
    if switched:  # SUCCESS with the amount actually captured; the message names the shortfall
        fac = cpo.state.facs["session-0001"]
        total = fac["total_costs"]["before_taxes"] + sum(
            t["amount"] for t in fac["total_costs"].get("taxes", [])
        )
        assert fac["capture_status_code"] == "SUCCESS" and round(total * 100) == 5000
        assert "owed" in fac["capture_status_message"]
    else:
        (dead,) = store.outbox.list("dead")
        assert "PARTIAL_SUCCESS is not accepted" in (dead.last_error or "")


@pytest.mark.parametrize("switched", [False, True], ids=["redirect-followed", "trailing-slash"])
async def test_trailing_slash_collections(
    tmp_path: Path, cpo: CpoSimulator, switched: bool
) -> None:
    cpo.state.quirks.add("redirect_slash")
    store = Store.open(tmp_path / "r.sqlite3")
    store.apply(outcome(1))
    await drain(store, cpo, InteropSettings(trailing_slash=switched))
    assert list(cpo.state.facs) == [
        "session-0001"
    ]  # a permanent redirect keeps the POST; the switch avoids it


async def test_peer_errors_are_reported_clearly(cpo: CpoSimulator) -> None:
    cpo.state.quirks.update({"auth403", "plain422"})
    async with aiohttp.ClientSession() as http:
        with pytest.raises(OcpiRejected, match="HTTP 403"):
            await OcpiClient(http, "wrong").request("GET", cpo.versions_url)
        with pytest.raises(
            OcpiRejected, match="HTTP 422, OCPI None non-OCPI answer: Unprocessable Entity"
        ):
            await OcpiClient(http, "token-c").request("POST", cpo.fac_url, {"id": "x"})
