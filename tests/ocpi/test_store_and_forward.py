"""Store and forward over real loopback HTTP against the embedded CPO: every session outcome
reaches the CPO exactly once in effect, whatever the CPO does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.errors import OcpiRejected
from gateway.ocpi.client import OcpiClient
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.ocpi.handshake import new_token, our_credentials, register
from gateway.ocpi.pusher import OutboxPusher
from gateway.store import OutboxMessage, Step, Store


def outcome(n: int, object_key: str | None = None, state: str = "completed") -> Step:
    sid = f"session-{n:04d}"
    payload = {
        "session_id": sid,
        "authorization_reference": f"EVP-{sid}",
        "state": state,
        "currency": "EUR",
        "captured_minor": 1000 + n,
        "price_minor": 1000 + n,
        "price_excl": f"{(1000 + n) / 119:.4f}",
        "ref": n,
        "card": {"masked_pan": "541333******0074"},
        "notes": [],
    }
    return Step(
        f"step-{n}",
        outbox=[
            OutboxMessage(
                f"{sid}:outcome", object_key or f"session:{sid}", "session.outcome", payload
            )
        ],
    )


class Rig:
    def __init__(
        self, store: Store, cpo: CpoSimulator, http: aiohttp.ClientSession, token: str
    ) -> None:
        self.store, self.cpo, self.http, self.token = store, cpo, http, token
        self.failures: list[
            str
        ] = []  # what the metrics page counts (evpay_upstream_failures_total)

    def pusher(self, timeout_s: float = 5.0) -> OutboxPusher:
        client = OcpiClient(self.http, self.token, timeout_s=timeout_s)
        return OutboxPusher(
            self.store,
            client,
            self.cpo.payments_url,
            lambda: datetime.now(UTC),
            backoff_min_s=0.05,
            backoff_max_s=0.2,
            idle_poll_s=0.05,
            on_failure=self.failures.append,
        )

    async def drain_until(
        self, done: Any, timeout: float = 10.0, timeout_s: float = 5.0
    ) -> OutboxPusher:
        pusher = self.pusher(timeout_s)
        stopping = asyncio.Event()
        task = asyncio.create_task(pusher.run(stopping))
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    await asyncio.sleep(0.02)
        finally:
            stopping.set()
            await task
        return pusher


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    cpo = CpoSimulator()
    cpo.state.callback = (
        False  # no gateway server in these tests (test_registration.py has the callback)
    )
    await cpo.start()
    cpo.state.tokens.add("token-c")
    store = Store.open(tmp_path / "o.sqlite3")
    async with aiohttp.ClientSession() as http:
        yield Rig(store, cpo, http, "token-c")
    await cpo.stop()
    store.close()


def facs(rig: Rig) -> dict[str, dict[str, Any]]:
    return rig.cpo.state.facs


async def test_handshake_token_a_to_c(rig: Rig) -> None:
    client_a = OcpiClient(rig.http, rig.cpo.state.token_a)
    ours = our_credentials(
        new_token(), "https://gw.example/ocpi/versions", ("DE", "EVP"), "Demo PTP"
    )
    reg = await register(client_a, rig.cpo.versions_url, ours)
    assert reg.token_c in rig.cpo.state.tokens and reg.token_b != reg.token_c
    assert rig.cpo.state.registered[0]["roles"][0]["role"] == "OTHER"
    assert reg.payments_url("financial-advice-confirmations") == rig.cpo.fac_url
    assert reg.payments_url("").rstrip("/") == rig.cpo.payments_url
    with pytest.raises(OcpiRejected, match="HTTP 401"):
        await register(OcpiClient(rig.http, "wrong"), rig.cpo.versions_url, ours)


async def test_outcomes_delivered_exactly_once_and_local_only_ones_skipped(rig: Rig) -> None:
    for n in range(5):
        rig.store.apply(outcome(n))
    rig.store.apply(outcome(9, state="voided"))  # nothing to confirm upstream
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0)
    assert sorted(facs(rig)) == [f"session-{n:04d}" for n in range(5)]
    assert len(rig.cpo.state.fac_posts) == 5 and not rig.cpo.state.rejected


@pytest.mark.parametrize("fault", ["http500", "retry_after", "ocpi3001"])
async def test_server_errors_are_retried(rig: Rig, fault: str) -> None:
    rig.cpo.state.faults.extend([fault, fault])
    rig.store.apply(outcome(1))
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0)
    assert rig.cpo.state.fac_posts == ["session-0001"]
    message = rig.store.outbox.get("session-0001:outcome")
    assert message is not None and message.attempts >= 3
    assert rig.failures == [
        "unreachable",
        "unreachable",
    ]  # each failed delivery counted once, by kind


@pytest.mark.parametrize("fault", ["slow", "reset_after_store"])
async def test_ambiguous_failures_get_before_posting_again(rig: Rig, fault: str) -> None:
    rig.cpo.state.faults.append(fault)
    rig.cpo.state.slow_s = 0.5
    rig.store.apply(outcome(1))
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0, timeout_s=0.2)
    assert rig.cpo.state.fac_posts == ["session-0001"]  # stored once: the retry found it by GET


async def test_a_passing_refusal_is_retried_and_delivered_once(rig: Rig) -> None:
    rig.cpo.state.faults.extend(["ocpi2001", "ocpi2001"])
    rig.store.apply(outcome(1))
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0)
    assert rig.cpo.state.fac_posts == ["session-0001"] and rig.store.outbox.list("dead") == []
    assert rig.failures == ["refused", "refused"]


async def test_poison_message_is_dead_lettered_without_blocking_others(rig: Rig) -> None:
    poison = outcome(0)
    payload = dict(poison.outbox[0].payload)
    payload["currency"] = (
        "XXX"  # a FAC the CPO can never accept... and we cannot even build: refused locally
    )
    rig.store.apply(
        Step(
            "poison",
            outbox=[OutboxMessage("poison:outcome", "session:poison", "session.outcome", payload)],
        )
    )
    rig.cpo.state.faults.extend(["ocpi2001"] * 5)  # the next five POSTs are refused
    for n in range(1, 3):
        rig.store.apply(outcome(n, object_key="session:poison-neighbour" if n == 1 else None))
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0, timeout=20)
    dead = rig.store.outbox.list("dead")
    assert [m.message_id for m in dead] == ["poison:outcome"], [
        (m.message_id, m.last_error) for m in dead
    ]
    assert sorted(facs(rig)) == [
        "session-0001",
        "session-0002",
    ]  # the others got through, once each
    assert "cannot build the OCPI object" in (dead[0].last_error or "")


async def test_a_persistent_refusal_is_dead_lettered_after_max_refusals(rig: Rig) -> None:
    rig.cpo.state.faults.extend(["ocpi2001"] * 5)
    rig.store.apply(outcome(1))
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0, timeout=20)
    (dead,) = rig.store.outbox.list("dead")
    assert "OCPI 2001" in (dead.last_error or "") and facs(rig) == {}


async def test_per_object_order_holds(rig: Rig) -> None:
    rig.cpo.state.faults.extend(["http500", "http500"])
    for n in range(4):
        rig.store.apply(outcome(n, object_key="same-object"))
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0)
    assert rig.cpo.state.fac_posts == [f"session-{n:04d}" for n in range(4)]


async def test_cpo_down_for_a_while_then_the_backlog_drains(rig: Rig) -> None:
    port = int(rig.cpo.base.rsplit(":", 1)[1])
    await rig.cpo.stop()
    for n in range(20):
        rig.store.apply(outcome(n))
    pusher = rig.pusher()
    stopping = asyncio.Event()
    task = asyncio.create_task(pusher.run(stopping))
    await asyncio.sleep(0.5)
    assert rig.store.outbox.backlog().pending == 20 and facs(rig) == {}  # kept, not lost
    await rig.cpo.start(port=port)
    async with asyncio.timeout(10):
        while rig.store.outbox.backlog().pending:
            await asyncio.sleep(0.02)
    stopping.set()
    await task
    assert len(facs(rig)) == 20 and len(rig.cpo.state.fac_posts) == 20


async def test_gateway_restart_mid_push_does_not_post_twice(rig: Rig, tmp_path: Path) -> None:
    rig.cpo.state.faults.append("slow")
    rig.cpo.state.slow_s = 0.6
    rig.store.apply(outcome(1))
    first = rig.pusher()
    stopping = asyncio.Event()
    task = asyncio.create_task(first.run(stopping))
    await asyncio.sleep(0.2)
    task.cancel()  # the gateway dies while the POST is on the wire
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.6)  # the CPO finishes storing it
    rig.store.close()
    rig.store = Store.open(tmp_path / "o.sqlite3")  # restart: reopen the same database
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0)
    assert rig.cpo.state.fac_posts == ["session-0001"]


async def test_terminal_announced_to_the_cpo(rig: Rig) -> None:
    from gateway.runtime.engine_host import EngineHost
    from tests.payments.fixtures import Clock, policy

    host = EngineHost(rig.store, policy(), Clock())
    host.record_terminal("t1", "tcp://10.0.0.5:20007", True, "52523535", "DE-SITE")
    host.record_terminal(
        "t1", "tcp://10.0.0.5:20007", True, "52523535", "DE-SITE"
    )  # a restart: announced once
    await rig.drain_until(lambda: rig.store.outbox.backlog().pending == 0)
    assert rig.cpo.state.terminals == {
        "DE-SITE-t1": {
            "terminal_id": "DE-SITE-t1",
            "reference": "52523535",
            "last_updated": rig.cpo.state.terminals["DE-SITE-t1"]["last_updated"],
        }
    }
    assert rig.store.terminals()[0]["state"] == "registered"


async def test_token_rotation_and_unregistration(rig: Rig) -> None:
    from gateway.ocpi.handshake import rotate, unregister

    reg = await register(
        OcpiClient(rig.http, rig.cpo.state.token_a),
        rig.cpo.versions_url,
        our_credentials(new_token(), "https://gw/v", ("DE", "EVP"), "x"),
    )
    rotated = await rotate(
        OcpiClient(rig.http, reg.token_c),
        reg,
        our_credentials(new_token(), "https://gw/v", ("DE", "EVP"), "x"),
    )
    assert rotated.token_c != reg.token_c and rotated.token_b != reg.token_b
    assert (
        reg.token_c not in rig.cpo.state.tokens and rotated.token_c in rig.cpo.state.tokens
    )  # the old one is gone
    await unregister(OcpiClient(rig.http, rotated.token_c), rotated)
    assert rotated.token_c not in rig.cpo.state.tokens
    with pytest.raises(OcpiRejected):
        await unregister(OcpiClient(rig.http, rotated.token_c), rotated)


async def test_a_slow_post_holds_up_only_its_own_object(rig: Rig) -> None:
    """The deliveries are a continuous pool: while one POST hangs, the other objects' messages
    keep flowing through the remaining slots (a batch-at-a-time push would wait for it)."""
    rig.cpo.state.faults.append("slow")
    rig.cpo.state.slow_s = 1.5
    for n in range(1, 13):
        rig.store.apply(outcome(n))
    pusher = rig.pusher()
    stopping = asyncio.Event()
    task = asyncio.create_task(pusher.run(stopping))
    try:
        async with asyncio.timeout(1.2):
            while len(facs(rig)) < 11:
                await asyncio.sleep(0.02)
        assert "session-0001" not in facs(rig)  # the slow one is still on the wire
    finally:
        stopping.set()
        await task
    assert sorted(facs(rig)) == [f"session-{n:04d}" for n in range(1, 13)]
    assert rig.store.outbox.backlog().pending == 0
