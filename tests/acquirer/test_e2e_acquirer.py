"""An Adyen session end to end with real parts: the daemon (store, supervisor, engine worker,
upstream worker with its listener), the nexo POI simulator speaking Adyen's JSON on loopback,
the simulated Adyen Checkout API (``evpay simulate acquirer``'s) on loopback sending signed
webhooks to the receiver on the daemon's OCPI listener, and the CPO simulator taking the FAC.

The pre-authorisation is made at the POI; the capture goes to the acquirer, never to the POI
(no Completion), and the session is booked only on the CAPTURE webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from drivers.nexo import messages as nm
from drivers.nexo.model import PaymentType
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from gateway.acquirer.sim import AdyenSimulator, SimState
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.runtime.app import Daemon
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.settings import parse_settings
from gateway.store.acquirer import StoredModification
from tests.acquirer.rig import API_KEY, HMAC_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER, post_webhook
from tests.helpers import EVPAY, free_port, subprocess_env
from tests.payments.test_e2e import price_minor

EVSE = "DE*EVP*A1"
CONFIG = """
[site]
id = "E2E-ADYEN"
country = "DE"
timezone = "Europe/Berlin"
[storage]
path = "{db}"
[api]
port = 0
[daemon]
shutdown_grace_s = 5
[[terminals]]
id = "a1"
protocol = "nexo"
device = "http://127.0.0.1:{poi}/nexo"
encoding = "adyen-json"
lab_plain_http = true
sale_id = "EVPAY-E2E"
poi_id = "POI-SIM-1"
modifications = "adyen"
{terminal_extra}
[acquirers.adyen]
base_url = "http://127.0.0.1:{acq}/v71"
merchant_account = "EVPayTest"
api_key = {{ value = "{api_key}" }}
hmac_key = {{ value = "{hmac}" }}
webhook_username = "{user}"
webhook_password = {{ value = "{password}" }}
webhook_deadline_s = {deadline}
timeout_s = 2
[upstream]
enabled = true
allow_insecure_http = true
versions_url = "{versions}"
token_a = {{ value = "{token_a}" }}
key = {{ value = "{fernet}" }}
listen = "127.0.0.1:{listen}"
public_url = "http://127.0.0.1:{listen}/ocpi/versions"
[charger]
enabled = true
mode = "simulated"
[[charger.evses]]
id = "{evse}"
terminal = "a1"
[pricing]
strategy = "{strategy}"
fixed_hold = {{ EUR = "50.00" }}
incremental_initial = "2.00"
incremental_step = "2.00"
hold_min = "1.00"
safety_margin = "0.10"
retry_initial_s = 1
default_tariff = "T1"
tariffs = [ {{ id = "T1", currency = "EUR", elements = [
  {{ price_components = [ {{ type = "ENERGY", price = "0.50", vat = "19", step_size = 1 }} ] }},
  {{ price_components = [ {{ type = "FLAT", price = "1.00", vat = "19", step_size = 1 }} ] }} ] }} ]
"""


@dataclass
class Site:
    daemon: Daemon
    task: asyncio.Task[int]

    def row(self) -> dict[str, Any]:
        rows = self.daemon.store.sessions(limit=10)
        assert len(rows) == 1
        return rows[0]

    async def wait_state(self, *states: str, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                rows = self.daemon.store.sessions(limit=10)
                if rows and rows[0]["state"] in states:
                    return rows[0]
                await asyncio.sleep(0.05)

    async def wait_modification(self, status: str, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not any(m.status == status for m in self.modifications()):
                await asyncio.sleep(0.05)

    def modifications(self) -> list[StoredModification]:
        book = self.daemon.store.acquirer
        return [*book.waiting(), *book.settled_since(datetime(2000, 1, 1, tzinfo=UTC))]

    async def kill(self) -> None:
        """The nearest an in-process test comes to a kill: the task cancelled, no shutdown."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.daemon.store.close()
        self.daemon.lock.release()


@dataclass
class Rig:
    poi: NexoPoi
    charger: SimulatedCharger
    cpo: CpoSimulator
    adyen: AdyenSimulator
    acq_port: int
    start: Callable[..., Awaitable[Site]]
    config: Path
    stop_poi: Callable[[], Awaitable[None]]
    sites: list[Site] = field(default_factory=list)

    async def evpay(self, *args: str) -> tuple[int, str]:
        """The real CLI against the running daemon's database."""
        proc = await asyncio.create_subprocess_exec(
            *EVPAY,
            *args,
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=subprocess_env(),
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    async def plug(
        self, site: Site, energy_wh: int = 8_000, step_wh: int = 2_000, every_s: float = 0.02
    ) -> None:
        async with asyncio.timeout(20):  # pay requests wait for the CPO registration
            while not (site.daemon.upstream_state() or (False, ""))[0]:
                await asyncio.sleep(0.05)
        self.charger.plug_in(
            EVSE, EvsePlan(energy_wh=energy_wh, step_wh=step_wh, meter_interval_s=every_s)
        )

    async def fac(self, timeout: float = 20) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while not self.cpo.state.facs:
                await asyncio.sleep(0.05)
        (fac,) = self.cpo.state.facs.values()
        return fac

    def poi_psp(self) -> str:
        """Adyen's reference of the POI's one payment (its TransactionID after the dot)."""
        (tid,) = self.poi.ledger
        return tid.rpartition(".")[2]

    def captures(self) -> list[dict[str, Any]]:
        return [m for m in self.adyen.state.applied if m["what"] == "captures"]


def completions(poi: NexoPoi) -> int:
    return sum(
        1
        for m in poi.requests
        if isinstance(m.body, nm.PaymentRequest)
        and m.body.payment_data is not None
        and m.body.payment_data.payment_type is PaymentType.COMPLETION
    )


Open = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def rigs(tmp_path: Path) -> AsyncIterator[Open]:
    """Opens the rig with the acquirer's variants, webhook deadline and whether it is up."""
    opened: list[tuple[Rig, Callable[[], Awaitable[None]]]] = []

    async def open_rig(
        variants: frozenset[str] = frozenset(),
        deadline: float = 60.0,
        started: bool = True,
        slow_s: float = 1.0,
        incremental: bool = False,
    ) -> Rig:
        poi = NexoPoi(PoiConfig(encoding="adyen-json"))
        poi_runner, poi_port = await serve_nexo_poi(poi)
        cpo = CpoSimulator()
        await cpo.start()
        listen, acq_port = free_port(), free_port()
        adyen = AdyenSimulator(
            SimState(
                api_key=API_KEY,
                hmac_key=HMAC_KEY,
                merchant_account="EVPayTest",
                webhook_url=f"http://127.0.0.1:{listen}/acquirer/adyen/notifications",
                webhook_user=WEBHOOK_USER,
                webhook_password=WEBHOOK_PASSWORD,
                variants=set(variants),
                slow_s=slow_s,
            )
        )
        if started:
            await adyen.start("127.0.0.1", acq_port)
        charger = SimulatedCharger([EVSE])
        text = CONFIG.format(
            db=tmp_path / "adyen.sqlite3",
            poi=poi_port,
            acq=acq_port,
            api_key=API_KEY,
            hmac=HMAC_KEY,
            user=WEBHOOK_USER,
            password=WEBHOOK_PASSWORD,
            deadline=deadline,
            versions=cpo.versions_url,
            token_a=cpo.state.token_a,
            fernet=Fernet.generate_key().decode(),
            listen=listen,
            evse=EVSE,
            strategy="incremental" if incremental else "fixed",
            terminal_extra="incremental = true" if incremental else "",
        )

        async def start() -> Site:
            daemon = Daemon(parse_settings(text, "<e2e-adyen>"), charger=charger)
            task = asyncio.create_task(daemon.run())
            async with asyncio.timeout(20):
                await daemon.ready.wait()
            site = Site(daemon, task)
            rig.sites.append(site)
            return site

        async def close() -> None:
            for site in rig.sites:
                if not site.task.done():
                    site.daemon.request_stop("test over")
                    await site.task
            await adyen.stop()
            await charger.close()
            await cpo.stop()
            await poi_runner.cleanup()

        config = tmp_path / "site.toml"
        config.write_text(text, encoding="utf-8")
        rig = Rig(poi, charger, cpo, adyen, acq_port, start, config, poi_runner.cleanup)
        opened.append((rig, close))
        return rig

    yield open_rig
    for _, close in opened:
        await close()


async def test_a_session_authorised_at_the_poi_is_captured_by_the_acquirer(rigs: Open) -> None:
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed")
    data = row["data"]
    assert data["captured_minor"] == price_minor(8_000) == 595, data["notes"]
    (capture,) = rig.captures()  # one capture at the acquirer, against the POI's payment
    assert capture["amount"] == {"currency": "EUR", "value": 595}
    assert capture["payment"] == rig.poi_psp()
    assert completions(rig.poi) == 0  # never captured at the POI
    fac = await rig.fac()
    assert fac["capture_status_code"] == "SUCCESS"
    (stored,) = site.modifications()
    assert stored.status == "confirmed"


async def test_a_charge_without_energy_releases_the_hold_by_a_cancel(rigs: Open) -> None:
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site, energy_wh=0)
    row = await site.wait_state("voided", "completed", "capture_failed")
    data = row["data"]
    assert row["state"] == "voided", (row["state"], data["notes"])
    assert data["released_minor"] == 5000 and data["captured_minor"] == 0
    (cancel,) = [m for m in rig.adyen.state.applied if m["what"] == "cancels"]
    assert cancel["payment"] == rig.poi_psp() and not rig.captures()


async def test_a_duplicated_webhook_is_booked_once(rigs: Open) -> None:
    rig = await rigs(frozenset({"duplicate"}))
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed")
    await rig.adyen.settle()
    assert row["data"]["captured_minor"] == 595 and len(rig.captures()) == 1
    (note,) = site.daemon.store.acquirer.notifications("adyen")
    assert note["repeats"] == 1  # stored once, the repeat counted
    await rig.fac()
    await asyncio.sleep(0.3)
    assert len(rig.cpo.state.facs) == 1 and site.row()["data"]["captured_minor"] == 595


async def test_a_lost_webhook_is_unconfirmed_at_the_deadline_and_a_late_one_decides(
    rigs: Open,
) -> None:
    rig = await rigs(frozenset({"lost"}), deadline=1.5)
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("capture_unconfirmed")
    assert row["data"]["captured_minor"] == 0 and row["data"]["owed_minor"] == 595
    overdue = site.daemon.store.acquirer.overdue(datetime.now(UTC))
    assert [m.modification.kind for m in overdue] == ["capture"]
    code, out = await rig.evpay("sessions", "list")
    assert code == 0 and "capture_unconfirmed" in out and "capture webhook missing since" in out
    code, out = await rig.evpay("reconcile")
    assert "missing_webhook" in out and f"missing_webhook:{row['id']}:capture:" in out, out
    assert not rig.cpo.state.facs  # never an outcome we do not know
    (capture,) = rig.captures()
    await post_webhook(rig, "CAPTURE", capture, success=True)  # late: still the evidence
    row = await site.wait_state("completed")
    assert row["data"]["captured_minor"] == 595
    fac = await rig.fac()
    assert fac["capture_status_code"] == "SUCCESS"


async def test_with_the_uplink_down_the_capture_waits_and_is_sent_once(rigs: Open) -> None:
    rig = await rigs(started=False)
    site = await rig.start()
    await rig.plug(site)
    await site.wait_state("capturing")
    await site.wait_modification("queued")
    async with asyncio.timeout(20):
        while not (m := site.modifications()[0]).last_error:
            await asyncio.sleep(0.05)
    assert m.status == "queued" and m.attempts >= 1  # tried, kept, visible
    code, out = await rig.evpay("sessions", "list")
    assert code == 0 and "capturing" in out and "acquirer: capture queued, not yet taken" in out
    await rig.adyen.start("127.0.0.1", rig.acq_port)  # the uplink is back
    row = await site.wait_state("completed")
    assert row["data"]["captured_minor"] == 595 and len(rig.captures()) == 1


async def test_killed_after_the_capture_is_stored_before_it_is_sent(rigs: Open) -> None:
    rig = await rigs(started=False)
    first = await rig.start()
    await rig.plug(first)
    await first.wait_modification("queued")
    await first.kill()
    await rig.adyen.start("127.0.0.1", rig.acq_port)
    second = await rig.start()
    row = await second.wait_state("completed")
    assert row["data"]["captured_minor"] == 595 and len(rig.captures()) == 1
    assert completions(rig.poi) == 0


async def test_killed_after_the_capture_was_sent_before_its_webhook(rigs: Open) -> None:
    """The acquirer applies the capture but its answer is lost; the daemon dies before the
    webhook (which comes late). After the restart the queued capture is sent again under the
    same Idempotency-Key: one capture at the acquirer, and the webhook completes the session."""
    rig = await rigs(frozenset({"slow", "response_lost"}), slow_s=6.0)
    first = await rig.start()
    await rig.plug(first)
    async with asyncio.timeout(20):
        while not rig.captures():
            await asyncio.sleep(0.05)
    await first.kill()
    second = await rig.start()
    row = await second.wait_state("completed")
    assert row["data"]["captured_minor"] == 595
    assert len(rig.captures()) == 1  # the same Idempotency-Key: applied once
    assert rig.adyen.state.dropped  # the first answer was indeed lost
    await rig.fac()
