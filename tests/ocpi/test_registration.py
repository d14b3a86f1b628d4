"""Registration with a CPO that behaves like the strictest real one, over loopback HTTP: the
CPO calls our versions back (with token B, checking the echoed ids) before it answers;
CPO-initiated registration; token rotation both ways; unregistration; and a refused
registration that says why everywhere (status, outbox, kiosk)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from gateway.errors import UpstreamError
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.ocpi.worker import UpstreamWorker
from gateway.settings import InteropSettings, SecretRef, UpstreamSettings
from gateway.store import Store
from tests.helpers import free_port, until
from tests.ocpi.test_store_and_forward import outcome


@dataclass
class Gateway:
    worker: UpstreamWorker
    store: Store
    task: asyncio.Task[None] | None
    stopping: asyncio.Event
    base: str

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def cpo() -> AsyncIterator[CpoSimulator]:
    sim = CpoSimulator()
    await sim.start()
    yield sim
    await sim.stop()


def upstream(cpo: CpoSimulator, port: int, **changes: Any) -> UpstreamSettings:
    return UpstreamSettings(
        enabled=True,
        allow_insecure_http=True,
        versions_url=cpo.versions_url,
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(Fernet.generate_key().decode())),
        listen=f"127.0.0.1:{port}",
        public_url=f"http://127.0.0.1:{port}/ocpi/versions",
        **changes,
    )


async def start(tmp_path: Path, settings: UpstreamSettings, name: str = "g") -> Gateway:
    store = Store.open(tmp_path / f"{name}.sqlite3")
    worker = UpstreamWorker(settings, "DE-SITE", store, lambda: datetime.now(UTC))
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    return Gateway(
        worker, store, task, stopping, settings.public_url.removesuffix("/ocpi/versions")
    )


def token_header(token: str) -> dict[str, str]:
    return {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}


async def test_gateway_initiated_registration_survives_the_cpo_calling_back(
    tmp_path: Path, cpo: CpoSimulator
) -> None:
    gw = await start(tmp_path, upstream(cpo, free_port()))
    gw.store.apply(outcome(1))
    try:
        await until(lambda: cpo.state.facs)
        assert cpo.state.callbacks == [
            f"{gw.base}/ocpi/versions",
            f"{gw.base}/ocpi/2.3.0",
        ]  # called back, ids echoed
        status = gw.store.upstream_status()
        assert status is not None and status["registered"]
        assert not cpo.state.rejected
    finally:
        await gw.stop()
        gw.store.close()


async def test_a_refused_registration_is_reported_with_the_cpos_reason(
    tmp_path: Path, cpo: CpoSimulator
) -> None:
    cpo.state.quirks.add("require_website")  # the CPO refuses our credentials
    gw = await start(tmp_path, upstream(cpo, free_port()))
    gw.store.apply(outcome(1))
    assert gw.task is not None
    with pytest.raises(UpstreamError):
        await gw.task
    status = gw.store.upstream_status()
    assert (
        status is not None
        and not status["registered"]
        and "website is required" in status["reason"]
    )
    gw.store.close()


async def test_without_our_server_the_strict_cpo_refuses_with_3001(
    tmp_path: Path, cpo: CpoSimulator
) -> None:
    port = free_port()
    settings = upstream(cpo, port).model_copy(update={"listen": ""})  # nothing answers the callback
    gw = await start(tmp_path, settings)
    assert gw.task is not None
    with pytest.raises(UpstreamError, match="3001"):
        await gw.task
    gw.store.close()


async def test_cpo_initiated_registration(tmp_path: Path, cpo: CpoSimulator) -> None:
    port = free_port()
    token_a = "token-a-we-gave-the-cpo"
    settings = upstream(cpo, port, registration="cpo").model_copy(
        update={"token_a": SecretRef(value=SecretStr(token_a)), "versions_url": ""}
    )
    gw = await start(tmp_path, settings)
    gw.store.apply(outcome(1))
    try:
        await until(lambda: gw.worker.server is not None and gw.worker.bound_port is not None)
        status = gw.store.upstream_status()
        assert (
            status is not None
            and not status["registered"]
            and "waiting for the CPO" in status["reason"]
        )
        async with (  # token A opens nothing but discovery and the POST
            aiohttp.ClientSession() as http,
            http.get(f"{gw.base}/ocpi/2.3.0/credentials", headers=token_header(token_a)) as r,
        ):
            assert r.status == 401
        ours = await cpo.register_with(f"{gw.base}/ocpi/versions", token_a)
        await until(lambda: cpo.state.facs)  # registered: the backlog goes out with the CPO's token
        assert ours["roles"][0]["role"] == "OTHER" and ours["token"] == cpo.state.ptp_token
        async with aiohttp.ClientSession() as http:  # token A is spent
            async with http.get(f"{gw.base}/ocpi/versions", headers=token_header(token_a)) as r:
                assert r.status == 401
            async with http.get(
                f"{gw.base}/ocpi/versions", headers=token_header(ours["token"])
            ) as r:
                assert r.status == 200
    finally:
        await gw.stop()
        gw.store.close()


async def test_token_rotation_both_ways_and_unregistration(
    tmp_path: Path, cpo: CpoSimulator
) -> None:
    gw = await start(tmp_path, upstream(cpo, free_port()))
    try:
        await until(lambda: gw.worker.pusher is not None)
        first_b, first_c = cpo.state.ptp_token, set(cpo.state.tokens)
        # We rotate: the CPO calls back with the new token B before it answers the PUT.
        callbacks = len(cpo.state.callbacks)
        await gw.worker.rotate_ours()
        assert cpo.state.ptp_token != first_b and len(cpo.state.callbacks) == callbacks + 2
        assert cpo.state.tokens.isdisjoint(first_c)  # the CPO issued a new token C
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{gw.base}/ocpi/versions", headers=token_header(first_b or "")
            ) as r:
                assert r.status == 401  # the old token B is gone
            # The CPO rotates: it PUTs new credentials to us with our current token B.
            new_c = "cpo-rotated-token-c"
            body = {
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
            async with http.put(
                f"{gw.base}/ocpi/2.3.0/credentials",
                json=body,
                headers=token_header(cpo.state.ptp_token or ""),
            ) as r:
                reply = await r.json()
            assert r.status == 200 and reply["data"]["token"] != cpo.state.ptp_token
            assert gw.worker._client is not None and gw.worker._client.token == new_c
            # The CPO ends the registration.
            async with http.delete(
                f"{gw.base}/ocpi/2.3.0/credentials", headers=token_header(reply["data"]["token"])
            ) as r:
                assert r.status == 200
        status = gw.store.upstream_status()
        assert (
            status is not None
            and not status["registered"]
            and "ended the registration" in status["reason"]
        )
        assert gw.store.registration() is None
    finally:
        await gw.stop()
        gw.store.close()


def test_interop_settings_default_to_the_spec() -> None:
    interop = InteropSettings()
    assert (interop.terminal_method, interop.partial_success, interop.trailing_slash) == (
        "POST",
        True,
        False,
    )
    assert interop.business_website is None
