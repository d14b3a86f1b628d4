"""The upstream worker in the daemon: registers once, keeps tokens encrypted, drains the outbox."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from gateway.errors import ConfigError
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.ocpi.registration_keeper import TokenVault
from gateway.ocpi.worker import UpstreamWorker
from gateway.payments.charger import ChargeStopped
from gateway.settings import SecretRef, UpstreamSettings
from gateway.store import Store
from tests.helpers import EVPAY, free_port, subprocess_env
from tests.ocpi.test_store_and_forward import outcome


async def test_registers_once_tokens_encrypted_then_drains(tmp_path: Path) -> None:
    cpo = CpoSimulator()
    await cpo.start()
    key = Fernet.generate_key().decode()
    port = free_port()  # our OCPI server: the CPO calls it back during registration
    settings = UpstreamSettings(
        enabled=True,
        allow_insecure_http=True,
        versions_url=cpo.versions_url,
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(key)),
        listen=f"127.0.0.1:{port}",
        public_url=f"http://127.0.0.1:{port}/ocpi/versions",
    )
    store = Store.open(tmp_path / "u.sqlite3")
    store.apply(outcome(1))
    try:
        for _round in range(2):  # a restart reuses the stored registration
            worker = UpstreamWorker(settings, "DE", store, lambda: datetime.now(UTC))
            stopping = asyncio.Event()
            task = asyncio.create_task(worker.run(stopping))
            async with asyncio.timeout(10):
                while store.outbox.backlog().pending:
                    await asyncio.sleep(0.02)
            stopping.set()
            await task
        assert len(cpo.state.registered) == 1 and list(cpo.state.facs) == ["session-0001"]
        raw = (
            sqlite3.connect(tmp_path / "u.sqlite3")
            .execute("SELECT token_b, token_c FROM upstream_registration")
            .fetchone()
        )
        token_c = next(iter(cpo.state.tokens))
        assert (
            token_c not in raw[1] and TokenVault(key).open(raw[1]) == token_c
        )  # encrypted at rest
        wrong = UpstreamWorker(
            settings.model_copy(
                update={"key": SecretRef(value=SecretStr(Fernet.generate_key().decode()))}
            ),
            "DE",
            store,
            lambda: datetime.now(UTC),
        )
        with pytest.raises(ConfigError, match="key changed"):
            await wrong.run(asyncio.Event())
    finally:
        store.close()
        await cpo.stop()


def test_bad_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Fernet"):
        TokenVault("not-a-key")


def test_outbox_cli(tmp_path: Path) -> None:
    db = tmp_path / "evpay.sqlite3"
    config = tmp_path / "g.toml"
    config.write_text(
        f'[site]\nid = "S"\ncountry = "DE"\n[storage]\npath = "{db}"\n', encoding="utf-8"
    )
    store = Store.open(db)
    store.apply(outcome(1))
    store.apply(outcome(2))
    store.outbox.dead_letter("session-0002:outcome", "OCPI 2001 invalid", datetime.now(UTC))
    store.close()

    def evpay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*EVPAY, "outbox", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            check=False,
        )

    listed = evpay("list")
    assert listed.returncode == 0 and "1 pending, 1 dead" in listed.stdout
    dead = json.loads(evpay("dead", "--json").stdout)
    assert [m["message_id"] for m in dead] == ["session-0002:outcome"] and dead[0][
        "last_error"
    ] == "OCPI 2001 invalid"
    shown = evpay("show", "session-0001:outcome")
    assert "EVP-session-0001" in shown.stdout
    assert evpay("retry", "session-0002:outcome").returncode == 0
    assert "2 pending, 0 dead" in evpay("list").stdout
    assert evpay("retry", "nope").returncode == 1


async def test_the_worker_serves_our_endpoints_with_token_b(tmp_path: Path) -> None:
    import aiohttp

    from gateway.ocpi.client import OcpiClient
    from tests.helpers import free_port

    cpo = CpoSimulator()
    await cpo.start()
    key = Fernet.generate_key().decode()
    port = free_port()
    settings = UpstreamSettings(
        enabled=True,
        allow_insecure_http=True,
        versions_url=cpo.versions_url,
        listen=f"127.0.0.1:{port}",
        public_url=f"http://127.0.0.1:{port}/ocpi/versions",
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(key)),
    )
    store = Store.open(tmp_path / "w.sqlite3")
    worker = UpstreamWorker(settings, "DE-SITE", store, lambda: datetime.now(UTC))
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        async with asyncio.timeout(10):
            while store.registration() is None:
                await asyncio.sleep(0.02)
        registered = store.registration()
        assert registered is not None
        token_b = TokenVault(key).open(registered["token_b"])
        assert cpo.state.registered[0]["token"] == token_b  # what we gave the CPO is what we accept
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(5):
                while True:
                    try:
                        reply = await OcpiClient(http, token_b).request("GET", settings.public_url)
                        break
                    except Exception:  # noqa: BLE001 - the listener may not be up yet
                        await asyncio.sleep(0.05)
        assert reply.data[0]["url"] == f"http://127.0.0.1:{port}/ocpi/2.3.0"
    finally:
        stopping.set()
        await task
        store.close()
        await cpo.stop()


async def test_the_cpo_rotates_and_ends_our_registration(tmp_path: Path) -> None:
    import aiohttp

    from gateway.errors import OcpiRejected
    from gateway.ocpi.client import OcpiClient
    from tests.helpers import free_port

    cpo = CpoSimulator()
    await cpo.start()
    key = Fernet.generate_key().decode()
    port = free_port()
    versions = f"http://127.0.0.1:{port}/ocpi/versions"
    settings = UpstreamSettings(
        enabled=True,
        allow_insecure_http=True,
        versions_url=cpo.versions_url,
        listen=f"127.0.0.1:{port}",
        public_url=versions,
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(key)),
    )
    store = Store.open(tmp_path / "r.sqlite3")
    worker = UpstreamWorker(settings, "DE-SITE", store, lambda: datetime.now(UTC))
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    credentials_url = f"http://127.0.0.1:{port}/ocpi/2.3.0/credentials"
    try:
        async with asyncio.timeout(10):
            while worker._client is None:
                await asyncio.sleep(0.02)
        registered = store.registration()
        assert registered is not None
        old_b = TokenVault(key).open(registered["token_b"])
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(5):
                while True:
                    try:
                        mine = await OcpiClient(http, old_b).request("GET", credentials_url)
                        break
                    except Exception:  # noqa: BLE001 - the listener may not be up yet
                        await asyncio.sleep(0.05)
            assert mine.data["token"] == old_b and mine.data["roles"][0]["role"] == "OTHER"
            new_c = "the-cpo-s-new-token-c"
            theirs = {
                "token": new_c,
                "url": cpo.versions_url,
                "roles": [
                    {
                        "role": "CPO",
                        "party_id": "CPO",
                        "country_code": "DE",
                        "business_details": {"name": "CPO"},
                    }
                ],
            }
            rotated = await OcpiClient(http, old_b).request("PUT", credentials_url, theirs)
            new_b = rotated.data["token"]
            registered = store.registration()
            assert registered is not None
            assert new_b != old_b and TokenVault(key).open(registered["token_c"]) == new_c
            assert worker._client is not None and worker._client.token == new_c
            with pytest.raises(OcpiRejected, match="HTTP 401"):
                await OcpiClient(http, old_b).request(
                    "GET", credentials_url
                )  # the old token B is dead
            await OcpiClient(http, new_b).request("DELETE", credentials_url)
            assert store.registration() is None
            with pytest.raises(OcpiRejected, match="HTTP 401"):
                await OcpiClient(http, new_b).request("GET", credentials_url)
    finally:
        stopping.set()
        await task
        store.close()
        await cpo.stop()


async def test_a_cdr_stored_before_a_crash_reaches_the_engine_at_start(tmp_path: Path) -> None:
    from gateway.ocpi.charger import OcpiChargerLink
    from gateway.payments.charger import ChargerEvent
    from gateway.store import InboxMessage, SessionRecord, Step

    cpo = CpoSimulator()
    await cpo.start()
    key = Fernet.generate_key().decode()
    port = free_port()  # our OCPI server: the CPO calls it back during registration
    settings = UpstreamSettings(
        enabled=True,
        allow_insecure_http=True,
        versions_url=cpo.versions_url,
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(key)),
        listen=f"127.0.0.1:{port}",
        public_url=f"http://127.0.0.1:{port}/ocpi/versions",
    )
    store = Store.open(tmp_path / "c.sqlite3")
    sid = "a" * 32
    store.apply(Step("open", sessions=[SessionRecord(sid, "charging", {"id": sid})]))
    cdr = {
        "country_code": "DE",
        "party_id": "CPO",
        "id": "CDR-1",
        "start_date_time": "2026-01-05T10:00:00Z",
        "end_date_time": "2026-01-05T11:00:00Z",
        "authorization_reference": f"EVP-{sid}",
        "currency": "EUR",
        "total_cost": {"before_taxes": 3.0},
        "total_energy": 6.0,
        "invoice_reference_id": "INV-1",
        "last_updated": "2026-01-05T11:00:00Z",
    }
    store.apply(
        Step("in", inbox=[InboxMessage("m1", "cpo", "cdr", cdr)], inbox_processed=["m1"])
    )  # then the crash
    link = OcpiChargerLink(
        None, "", "", {"E1": "LOC1"}, ("DE", "EVP"), lambda: datetime.now(UTC), store
    )
    heard: list[ChargerEvent] = []
    link.subscribe(heard.append)
    worker = UpstreamWorker(settings, "S", store, lambda: datetime.now(UTC), link)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        async with asyncio.timeout(10):
            while not heard:
                await asyncio.sleep(0.02)
    finally:
        stopping.set()
        await task
        store.close()
        await cpo.stop()
    stopped = heard[0]
    assert isinstance(stopped, ChargeStopped)
    assert stopped.kind == "stopped" and stopped.session_id == sid and stopped.meter_wh == 6000
    assert stopped.invoicer == "cpo"
