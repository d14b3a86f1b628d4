"""Issue 26 item 7: a corrected CDR that arrives after a daemon restart is a price correction,
not a second "first" CDR dropped by a completed session — the link finds the session's first
CDR in the store's inbox (oldest first), not in memory. A real daemon, stopped and started again
on the same SQLite file, a real pty terminal and the embedded CPO on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from pydantic import SecretStr

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.ocpi.charger import OcpiChargerLink
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.ocpi.cpo_sim.strict import _auth, _with_ids
from gateway.ocpi.worker import UpstreamWorker
from gateway.payments.charger import ChargerEvent, PriceCorrection
from gateway.runtime.app import Daemon
from gateway.settings import SecretRef, UpstreamSettings, parse_settings
from gateway.store import InboxMessage, SessionRecord, Step, Store
from tests.helpers import free_port
from tests.ocpi.cdrs import cdr
from tests.ocpi.test_standard_flow import ocpi_site
from tests.site_rig import tariff_toml


def _corrected(first: dict[str, Any], before: float, vat: float) -> dict[str, Any]:
    return {
        **first,
        "id": f"{first['id']}-C",
        "total_cost": {"before_taxes": before, "taxes": [{"name": "VAT", "amount": vat}]},
    }


async def _post_cdr(cpo: CpoSimulator, cdr: dict[str, Any]) -> None:
    """The CPO posts a CDR to the PTP's cdrs endpoint (retried until the PTP takes it)."""
    headers = _auth(cpo.state.ptp_token or "")
    async with aiohttp.ClientSession(headers=headers, trace_configs=[_with_ids()]) as http:
        async with asyncio.timeout(15):
            while True:
                try:
                    endpoints = await cpo._ptp_endpoints(http, cpo.state.ptp_versions_url or "")
                    async with http.post(endpoints["cdrs"], json=cdr) as r:
                        if r.status < 300:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)


async def _run(daemon: Daemon, until: Any, timeout: float = 20) -> None:
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10):
            await daemon.ready.wait()
        async with asyncio.timeout(timeout):
            while not await until():
                await asyncio.sleep(0.05)
    finally:
        daemon.request_stop("test over")
        await task


async def test_a_corrected_cdr_after_a_restart_refunds_the_difference(tmp_path: Path) -> None:
    cpo = CpoSimulator()
    await cpo.start()
    cpo.state.session_kwh = Decimal(6)
    cpo.state.push_interval_s = 0.02
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
    serving = asyncio.create_task(sim.serve_line(port))
    db = tmp_path / "d.sqlite3"
    config = ocpi_site(
        db,
        port.slave_path,
        cpo,
        free_port(),
        pricing='fixed_hold = { EUR = "50.00" }\nhold_min = "1.00"',
        tariffs=[tariff_toml()],
    )

    def sessions() -> list[dict[str, Any]]:
        store = Store.open(db, read_only=True)
        try:
            return store.sessions(limit=10)
        finally:
            store.close()

    try:
        first = Daemon(parse_settings(config, "<ocpi>"))
        asked: list[bool] = []

        async def paid() -> bool:
            if first.api is None or not first.api.bound_port:
                return False
            if not asked:
                await asyncio.sleep(0.3)
                async with aiohttp.ClientSession() as http:
                    url = f"http://127.0.0.1:{first.api.bound_port}/evses/E1/pay"
                    async with http.post(url, json={}) as r:
                        assert r.status == 202
                asked.append(True)
            return bool(cpo.state.facs)

        await _run(first, paid)
        (done,) = sessions()
        assert done["state"] == "completed"
        captured = done["data"]["captured_minor"]  # 6 kWh at 0.50 + 19 %: 3.57
        assert captured == 357
        second = Daemon(parse_settings(config, "<ocpi>"))  # the restart: nothing in memory
        posted: list[bool] = []

        async def refunded() -> bool:
            if not posted:
                await asyncio.sleep(0.5)
                await _post_cdr(cpo, _corrected(cpo.state.cdrs[0], 2.50, 0.48))  # 2.98
                posted.append(True)
            (s,) = sessions()
            return bool(s["data"].get("refunds"))

        await _run(second, refunded)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await port.close()
        await cpo.stop()
    (s,) = sessions()
    (refund,) = s["data"]["refunds"]
    assert refund["source"] == "cdr" and refund["amount_minor"] == 357 - 298


def test_a_fresh_link_finds_the_first_cdr_in_the_store_and_passes_the_currency(
    tmp_path: Path,
) -> None:
    """The first CDR is the oldest stored one (the inbox lists newest first); a correction in
    another currency reaches the engine with its currency (item 9: the engine refuses it)."""
    store = Store.open(tmp_path / "c.sqlite3")
    for n, (cdr_id, before, cur) in enumerate(
        (("CDR-1", "3.00", "EUR"), ("CDR-2", "2.50", "EUR"), ("CDR-3", "250", "JPY"))
    ):
        payload = cdr(cdr_id, before, currency=cur).to_json()
        store.apply(Step(f"in{n}", inbox=[InboxMessage(f"m{n}", "cpo", "cdr", payload)]))
    link = OcpiChargerLink(
        None, "", "", {"E1": "LOC1"}, ("DE", "EVP"), lambda: datetime.now(UTC), store
    )
    heard: list[ChargerEvent] = []
    link.subscribe(heard.append)
    link.cdr_pushed(cdr("CDR-2", "2.50"))  # after a restart: a correction, not a first CDR
    link.cdr_pushed(cdr("CDR-3", "250", currency="JPY"))
    store.close()
    assert [h.kind for h in heard] == ["price_corrected", "price_corrected"]
    eur, jpy = heard
    assert isinstance(eur, PriceCorrection) and isinstance(jpy, PriceCorrection)
    assert (eur.total_minor, eur.currency) == (250, "EUR")
    assert (jpy.total_minor, jpy.currency) == (250, "JPY")


async def test_a_correction_stored_before_a_crash_reaches_a_closed_session_at_start(
    tmp_path: Path,
) -> None:
    """The replay goes oldest first and hands a correction on even when its session is closed
    (the engine keys it by the CDR's id); the first CDR of a closed session is not sent again."""
    cpo = CpoSimulator()
    await cpo.start()
    port = free_port()
    settings = UpstreamSettings(
        enabled=True,
        allow_insecure_http=True,
        versions_url=cpo.versions_url,
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(Fernet.generate_key().decode())),
        listen=f"127.0.0.1:{port}",
        public_url=f"http://127.0.0.1:{port}/ocpi/versions",
    )
    store = Store.open(tmp_path / "c.sqlite3")
    closed = SessionRecord("s1", "completed", {"id": "s1"}, final=True)
    store.apply(Step("closed", sessions=[closed]))
    for n, (cdr_id, before) in enumerate((("CDR-1", "3.00"), ("CDR-2", "2.50"))):
        payload = cdr(cdr_id, before).to_json()
        message = InboxMessage(f"m{n}", "cpo", "cdr", payload)
        store.apply(Step(f"in{n}", inbox=[message], inbox_processed=[f"m{n}"]))
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
    (correction,) = heard
    assert isinstance(correction, PriceCorrection) and correction.reason == "corrected CDR CDR-2"
