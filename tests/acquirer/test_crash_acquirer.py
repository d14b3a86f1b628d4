"""The real daemon (``evpay run``, its own process) killed with SIGKILL around an online capture:
once after the capture is stored but before the acquirer could take it, once after the
acquirer took it but before its webhook came. After the restart the acquirer has exactly one
capture (the same Idempotency-Key) and the session completes on the webhook."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.acquirer.adyen_site import EVSE, open_site
from tests.helpers import EVPAY, free_port, subprocess_env


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet, or the schema not yet migrated
        return []


async def _until(check: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


async def _pay(api: int) -> None:
    """Ask for payment until the daemon takes it (it refuses until it is registered upstream)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(60):
        while True:
            try:
                async with http.post(f"http://127.0.0.1:{api}/evses/{EVSE}/pay", json={}) as r:
                    if r.status == 202:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


async def _session_state(db: Path) -> str | None:
    rows = _query(db, "SELECT state FROM sessions")
    return str(rows[0][0]) if rows else None


async def test_killed_around_an_online_capture_it_is_made_once(tmp_path: Path) -> None:
    api = free_port()
    db = tmp_path / "crash.sqlite3"
    parts = await open_site(
        db,
        deadline=600,
        variants={"slow"},
        slow_s=10.0,  # the webhook comes after the second kill and restart
        started=False,  # the acquirer is not up: the first capture can only be stored
        api_port=api,
    )
    adyen, cpo = parts.adyen, parts.cpo
    text = parts.text
    config = tmp_path / "site.toml"
    config.write_text(text, encoding="utf-8")
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"daemon-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [*EVPAY, "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
        )
        procs.append(proc)
        return proc

    async def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)

    def modification(status: str) -> bool:
        found = _query(db, "SELECT status FROM acquirer_modifications WHERE kind = 'capture'")
        return [str(r[0]) for r in found] == [status]

    try:
        first = start()  # the acquirer is not up: the capture can only be stored
        await _pay(api)
        await _until(lambda: modification("queued"))
        await kill(first)  # 1: stored, never taken
        assert not adyen.state.applied
        await adyen.start("127.0.0.1", parts.acq_port)
        second = start()
        await _until(lambda: modification("received"))
        await kill(second)  # 2: taken by the acquirer, its webhook not yet come
        start()
        async with asyncio.timeout(60):
            while await _session_state(db) != "completed":
                await asyncio.sleep(0.1)
        async with asyncio.timeout(30):
            while not cpo.state.facs:
                await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait)
        await parts.close()
    captures = [m for m in adyen.state.applied if m["what"] == "captures"]
    assert len(captures) == 1  # the same Idempotency-Key across three lives
    (row,) = _query(db, "SELECT data FROM sessions")
    data = json.loads(str(row[0]))
    assert data["captured_minor"] == captures[0]["amount"]["value"] > 0
    assert _query(db, "SELECT repeats FROM acquirer_notifications") == [(0,)]
