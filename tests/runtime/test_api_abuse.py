"""The local API under the attacks of issue 27, over real loopback sockets against the real daemon
with a simulated terminal on a pty: slow-loris, slow bodies, late requests, deep JSON, shared
idempotency keys, and a full disk while the kiosk pays."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.errors import StoreFull
from gateway.payments import events as e
from gateway.runtime.app import Daemon
from gateway.runtime.charger import SimulatedCharger
from gateway.runtime.connections import MAX_CONNECTIONS
from gateway.settings import parse_settings
from gateway.store import JournalEntry, Step, Store
from tests.helpers import EVPAY, REPO, subprocess_env
from tests.site_rig import site_toml

TOKENS = {"kiosk-1": "kiosk-one-token-0123456789", "kiosk-2": "kiosk-two-token-0123456789"}
CAP = 16


def _config(db: Path, device: str) -> str:
    clients = "".join(
        f'[[api.clients]]\nid = "{cid}"\ntoken_sha256 = "{hashlib.sha256(t.encode()).hexdigest()}"\n'
        for cid, t in TOKENS.items()
    )
    return site_toml(db, {"t1": device}, site="ABUSE", api=clients, evses={"E1": "t1", "E2": "t1"})


class Site:
    def __init__(self, daemon: Daemon, config: Path, task: asyncio.Task[int]) -> None:
        self.daemon, self.config, self.task = daemon, config, task

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.daemon.api.bound_port}"

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.daemon.api.bound_port)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=5.0))
    serving = asyncio.create_task(sim.serve_line(port))
    config = tmp_path / "a.toml"
    config.write_text(_config(tmp_path / "a.sqlite3", f"serial://{port.slave_path}"), "utf-8")
    settings = parse_settings(config.read_text("utf-8"), "<a>")
    daemon = Daemon(settings, charger=SimulatedCharger(["E1", "E2"]))
    guard = daemon.api.guard
    guard.max_connections, guard.header_timeout_s = CAP, 1.0
    daemon.api._body_timeout, daemon.api._deadline = 1.0, 3.0
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        await daemon.ready.wait()
        while daemon.engine is None or "t1" not in daemon.engine.status.terminal_state:
            await asyncio.sleep(0.05)
    yield Site(daemon, config, task)
    daemon.request_stop("test over")
    await asyncio.gather(task, return_exceptions=True)  # a test may have stopped it (74)
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await port.close()


def _auth(client: str = "kiosk-1", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[client]}", **extra}


async def _post(
    url: str, headers: dict[str, str], body: Any = None, data: bytes | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url, headers={"Content-Type": "application/json", **headers}, json=body, data=data
        ) as r,
    ):
        return r.status, await r.json()


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, await r.json()


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read() == b"" or True  # EOF, or a final answer then EOF
    except TimeoutError:
        return False


async def test_a_half_sent_request_head_is_closed_after_the_header_timeout(site: Site) -> None:
    reader, writer = await site.open()
    writer.write(b"POST /evses/E1/pay HTTP/1.1\r\nHost: x\r\n")  # and then nothing
    assert await _closed(reader, within=3.0)
    writer.close()


async def test_slow_loris_beyond_the_cap_leaves_health_and_pay_answering(site: Site) -> None:
    """cap + 50 half-open connections: the oldest idle ones are evicted, /health and a pay
    are answered at once, and the listener never holds more than its cap."""
    site.daemon.api.guard.header_timeout_s = 60.0  # only eviction can free a slot here
    loris = []
    for _ in range(CAP + 50):
        reader, writer = await site.open()
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        loris.append((reader, writer))
    await asyncio.sleep(0.2)
    assert len(site.daemon.api.guard) <= CAP
    async with asyncio.timeout(5):
        assert (await _get(f"{site.base}/health"))[0] == 200
        status, answer = await _post(f"{site.base}/evses/E1/pay", _auth(), {})
    assert status == 202, answer
    closed = sum([await _closed(r, within=0.05) for r, _ in loris])
    assert closed >= 50
    for _, writer in loris:
        writer.close()


async def test_a_body_that_does_not_come_is_answered_408(site: Site) -> None:
    reader, writer = await site.open()
    head = (
        "POST /evses/E1/pay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKENS['kiosk-1']}\r\nContent-Length: 100\r\n\r\n{{"
    )
    writer.write(head.encode())
    async with asyncio.timeout(5):
        status_line = await reader.readline()
    assert b" 408 " in status_line
    writer.close()
    assert site.daemon.store.sessions() == []


async def test_a_pay_request_past_its_deadline_is_refused_not_run(site: Site) -> None:
    site.daemon.api._body_timeout = 10.0  # the body comes, but after the request's deadline
    site.daemon.api._deadline = 0.5
    reader, writer = await site.open()
    body = b'{"target": {"kwh": "10"}}'
    head = (
        "POST /evses/E1/pay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKENS['kiosk-1']}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode())
    await asyncio.sleep(1.0)
    writer.write(body)
    async with asyncio.timeout(5):
        status_line = await reader.readline()
    assert b" 503 " in status_line
    writer.close()
    await asyncio.sleep(0.2)
    assert site.daemon.store.sessions() == []  # the kiosk gave up: nothing started


async def test_json_nested_30000_deep_is_a_400_not_a_500(site: Site) -> None:
    deep = b"[" * 30_000 + b"]" * 30_000  # under the 64 KiB body limit
    status, answer = await _post(f"{site.base}/evses/E1/pay", _auth(), data=deep)
    assert status == 400 and "nested deeper than 16" in answer["error"]


async def test_idempotency_keys_are_per_client_and_a_reused_key_needs_the_same_body(
    site: Site,
) -> None:
    url = f"{site.base}/evses/E1/pay"
    first = await _post(url, _auth("kiosk-1", **{"Idempotency-Key": "1"}), {})
    assert first[0] == 202
    again = await _post(url, _auth("kiosk-1", **{"Idempotency-Key": "1"}), {})
    assert again[0] == 202 and again[1]["session"] == first[1]["session"]
    # the same key from another kiosk is that kiosk's own: not the first kiosk's session
    other = await _post(url, _auth("kiosk-2", **{"Idempotency-Key": "1"}), {})
    assert other[0] == 409  # E1 is busy with kiosk-1's session: kiosk-2 is not handed it
    for body, where in (({"target": {"kwh": "20"}}, url), ({}, f"{site.base}/evses/E2/pay")):
        status, answer = await _post(where, _auth("kiosk-1", **{"Idempotency-Key": "1"}), body)
        assert status == 422 and "different request" in answer["error"], (body, where)


async def test_the_client_that_started_a_session_is_stored_and_journaled(site: Site) -> None:
    status, answer = await _post(f"{site.base}/evses/E1/pay", _auth("kiosk-2"), {})
    assert status == 202
    store = site.daemon.store
    assert store.session_origin(answer["session"]) == "kiosk-2"
    entries = [e for e in store.journal(answer["session"]) if e["kind"] == "session.api_client"]
    assert len(entries) == 1 and json.dumps(entries[0]["data"]).count("kiosk-2") == 1
    shown = await asyncio.to_thread(
        subprocess.run,
        [*EVPAY, "sessions", "show", answer["session"], "--config", str(site.config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert "started over the local API by client kiosk-2" in shown.stdout, shown.stderr


def _fill(store: Store) -> None:
    """A real SQLITE_FULL: the file may not grow past its size (max_page_count), and the free
    room of its pages is used up by journal entries of shrinking size until none fits."""
    conn = store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for size in (3000, 1000, 300, 100, 30, 10):
        with contextlib.suppress(StoreFull):
            for _ in range(10_000):
                entry = JournalEntry("test", "fill", "test.fill", {"x": "f" * size})
                store.apply(Step(f"fill:{uuid.uuid4().hex}", journal=[entry]))


async def test_a_full_disk_answers_503_and_marks_the_daemon_degraded(site: Site) -> None:
    conn = site.daemon.store._conn
    _fill(site.daemon.store)
    status, answer = await _post(f"{site.base}/evses/E1/pay", _auth(), {})
    assert status == 503 and "disk holding the database is full" in answer["error"]
    health_status, health = await _get(f"{site.base}/health")
    assert health_status == 503 and health["status"] == "degraded" and "full" in health["store"]
    assert site.daemon.store.sessions() == []
    config = site.config.read_text("utf-8").replace(
        "port = 0", f"port = {site.daemon.api.bound_port}"
    )
    site.config.write_text(config, "utf-8")
    shown = await asyncio.to_thread(
        lambda: subprocess.run(
            [*EVPAY, "status", "--config", str(site.config)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            check=False,
        )
    )
    assert shown.returncode == 1 and "degraded" in shown.stdout and "store: " in shown.stdout
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert (await _post(f"{site.base}/evses/E1/pay", _auth(), {}))[0] == 202
    assert (await _get(f"{site.base}/health"))[0] == 200


def test_the_unit_gives_the_daemon_descriptors_for_every_connection_it_may_hold() -> None:
    unit = (REPO / "systemd" / "evpay.service").read_text(encoding="utf-8")
    limits = [
        line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("LimitNOFILE=")
    ]
    assert limits and int(limits[0]) >= 2 * MAX_CONNECTIONS + 1024


async def test_a_step_the_engine_cannot_write_stops_the_daemon_with_74(site: Site) -> None:
    status, answer = await _post(f"{site.base}/evses/E1/pay", _auth(), {})
    assert status == 202
    engine = site.daemon.engine
    assert engine is not None
    async with asyncio.timeout(10):
        await engine.status.idle.wait()
    _fill(site.daemon.store)
    engine.submit(e.ChargerStarted(answer["session"], "started-on-a-full-disk", 0))
    async with asyncio.timeout(10):
        with pytest.raises(StoreFull) as stopped:
            await site.task
    assert stopped.value.exit_code == 74
