"""The OCPI standard payments flow end to end, over a real pty and real loopback HTTP:
card at the terminal → pre-auth → Commands.StartSession → the CPO's Session pushes → CDR →
capture at the terminal → Financial Advice Confirmation to the CPO."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from drivers.transport.serial import SerialTransport
from drivers.transport.url import SerialUrl
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
from gateway.ocpi.charger import OcpiChargerLink
from gateway.ocpi.client import OcpiClient
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.ocpi.handshake import new_token, our_credentials, register
from gateway.ocpi.pusher import OutboxPusher
from gateway.ocpi.server import PtpServer
from gateway.payments.charger import PaymentRequested
from gateway.payments.tariff import Sample, price
from gateway.runtime.app import Daemon
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_parts import SiteRules, TerminalFacts
from gateway.runtime.engine_worker import EngineWorker
from gateway.settings import parse_settings
from gateway.store import Store
from tests.helpers import EVPAY, free_port, subprocess_env
from tests.payments.fixtures import TARIFF, TZ, policy
from tests.site_rig import site_toml, tariff_toml, upstream_toml


def ocpi_site(
    db: Path,
    pty: str,
    cpo: CpoSimulator,
    listen: int,
    extra: str = "",
    *,
    pricing: str = "",
    tariffs: Sequence[str] = (),
) -> str:
    """A site in charger mode "ocpi" against the embedded CPO on loopback (no own pricing
    unless ``tariffs`` are given)."""
    return site_toml(
        db,
        {"t1": f"serial://{pty}"},
        site="OCPI-SITE",
        charger='mode = "ocpi"',
        evse_keys='location = "LOC1"',
        pricing=pricing,
        tariffs=tariffs,
        extra=upstream_toml(cpo, listen) + extra,
    )


async def test_start_session_pushes_cdr_capture_fac(tmp_path: Path) -> None:
    now = lambda: datetime.now(UTC)  # noqa: E731
    cpo = CpoSimulator()
    await cpo.start()
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
    serving = asyncio.create_task(sim.serve_line(port))
    store = Store.open(tmp_path / "flow.sqlite3")
    ptp_port = free_port()
    base = f"http://127.0.0.1:{ptp_port}"
    stopping = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        token_b = new_token()  # our server answers with it before we register: the CPO calls back
        link = OcpiChargerLink(None, "", "", {"E1": "LOC1"}, ("DE", "EVP"), now)
        runner = web.AppRunner(PtpServer(store, token_b, base, "DE-SITE", now, receiver=link).app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", ptp_port).start()
        reg = await register(
            OcpiClient(http, cpo.state.token_a),
            cpo.versions_url,
            our_credentials(token_b, f"{base}/ocpi/versions", ("DE", "EVP"), "EVPay Edge"),
        )
        assert (
            cpo.state.callbacks[0] == f"{base}/ocpi/versions"
        )  # the CPO called us back before answering
        client = OcpiClient(http, reg.token_c)
        commands_url = reg.endpoints.url("commands", "RECEIVER")
        assert commands_url is not None
        link.bind(client, commands_url, f"{base}/ocpi/ptp/2.3.0/commands")
        terminal = ZvtTerminal(
            "T1",
            SerialTransport(SerialUrl(port.slave_path)),
            serial_framing=True,
            options=ZvtOptions(password="123456"),
        )
        engine = EngineWorker(
            EngineHost(store, policy(), now),
            {"T1": terminal},
            link,
            {"E1": EngineWorker.route("T1", "EUR")},
            TerminalFacts(devices={"T1": port.slave_path}),
            SiteRules(site="DE-SITE"),
        )
        pusher = OutboxPusher(
            store, client, reg.payments_url(""), now, backoff_min_s=0.05, idle_poll_s=0.05
        )
        tasks = [
            asyncio.create_task(engine.run(stopping)),
            asyncio.create_task(pusher.run(stopping)),
        ]
        try:
            async with asyncio.timeout(10):  # the terminal registered (after a quiet line)
                await engine.status.registered.wait()
            engine.on_charger_event(PaymentRequested(evse="E1"))  # a driver pays at the terminal
            async with asyncio.timeout(20):
                while not cpo.state.facs:
                    await asyncio.sleep(0.05)
        finally:
            stopping.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
            await terminal.close()
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await port.close()

    (session,) = [r for r in store.sessions() if not r["id"].startswith("orphan")]
    data = session["data"]
    assert session["state"] == "completed" and data["billed_energy_wh"] == 6000
    assert cpo.state.commands[0] == "START_SESSION"
    (cdr,) = cpo.state.cdrs
    assert cdr["authorization_reference"] == data["reference"] and cdr[
        "invoice_reference_id"
    ].startswith("INV-")
    assert data["invoicer"] == "cpo" and data["invoice_reference"] == cdr["invoice_reference_id"]
    (fac,) = cpo.state.facs.values()
    assert (
        fac["authorization_reference"] == data["reference"]
        and fac["capture_status_code"] == "SUCCESS"
    )
    gross = fac["total_costs"]["before_taxes"] + sum(
        t["amount"] for t in fac["total_costs"].get("taxes", [])
    )
    readings = [Sample(datetime.fromisoformat(at), wh) for at, wh, _trusted in data["readings"]]
    expected = price(TARIFF, readings, TZ).minor  # 1.00 + 6 kWh at the day or night rate, +19 %
    assert expected in (440, 369)
    assert round(gross * 100) == data["captured_minor"] == expected
    assert (
        sim.state.transactions[int(data["ref"])].booked == expected
    )  # the terminal booked the same
    inbox = {k for (k,) in store._conn.execute("SELECT DISTINCT kind FROM inbox")}
    assert {"session", "cdr"} <= inbox  # every push stored in the inbox first
    store.close()
    await cpo.stop()


@pytest.mark.parametrize(
    ("hold", "session_kwh"), [("50.00", 6), ("2.00", 50)], ids=["full", "cost-cap"]
)
async def test_the_daemon_runs_the_standard_flow(
    tmp_path: Path, hold: str, session_kwh: int
) -> None:
    """The same flow as a site runs it: `evpay run` with charger mode "ocpi", started from the
    local API (the kiosk asks to pay at an EVSE). With a small hold the engine stops the charge
    at the cap: StopSession goes through the outbox and the capture never exceeds the hold."""
    cpo = CpoSimulator()
    await cpo.start()
    # The CPO publishes its own tariff for E1 (paginated lists): it must win over the configured one;
    # an invalid tariff (no step_size) is skipped without hiding the others.
    cpo.state.tariffs = [
        {
            "id": "OTHER",
            "currency": "EUR",
            "elements": [{"price_components": [{"type": "FLAT", "price": 9}]}],
            "last_updated": "2026-01-01T00:00:00Z",
        },
        {
            "id": "CPO-T",
            "currency": "EUR",
            "last_updated": "2026-01-01T00:00:00Z",
            "elements": [
                {"price_components": [{"type": "ENERGY", "price": 0.80, "vat": 19, "step_size": 1}]}
            ],
        },
    ]
    cpo.state.locations = [
        {
            "country_code": "DE",
            "party_id": "CPO",
            "id": "LOC1",
            "last_updated": "2026-01-01T00:00:00Z",
            "evses": [{"uid": "E1", "connectors": [{"id": "1", "tariff_ids": ["CPO-T"]}]}],
        }
    ]
    cpo.state.fiscal_lines = ["VAT 19 % included", "Fiscal signature QX7-42"]
    cpo.state.session_kwh = Decimal(session_kwh)
    cpo.state.kwh_step = Decimal("0.5")
    cpo.state.push_interval_s = 0.02
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
    serving = asyncio.create_task(sim.serve_line(port))
    listen = free_port()
    config = (
        ocpi_site(tmp_path / "d.sqlite3", port.slave_path, cpo, listen)
        + f"""
[pricing]
fixed_hold = {{ EUR = "{hold}" }}
hold_min = "1.00"
default_tariff = "T"
tariffs = [ {{ id = "T", currency = "EUR", elements = [
  {{ price_components = [ {{ type = "ENERGY", price = "0.50", vat = "19", step_size = 1 }} ] }} ] }} ]
"""
    )
    daemon = Daemon(parse_settings(config, "<ocpi>"))
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10):
            await daemon.ready.wait()
            while daemon.engine is None or "E1" not in daemon.engine.host.policy.tariffs:
                await asyncio.sleep(0.05)
        assert daemon.engine.host.policy.tariffs["E1"].id == "CPO-T"
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{daemon.api.bound_port}/evses/E1/pay", json={}
            ) as r:
                assert r.status == 202
            async with http.post(
                f"http://127.0.0.1:{daemon.api.bound_port}/evses/NOPE/pay", json={}
            ) as r:
                assert r.status == 404
        async with asyncio.timeout(20):
            while not cpo.state.facs or "Fiscal signature QX7-42" not in sim.state.printed:
                await asyncio.sleep(0.05)
    finally:
        daemon.request_stop("test over")
        await task
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await port.close()
        await cpo.stop()
    (fac,) = cpo.state.facs.values()
    if session_kwh == 6:
        assert fac["capture_status_code"] == "SUCCESS"
    elif (
        fac["capture_status_code"] != "SUCCESS"
    ):  # the CPO's charge ran past the cap before it stopped
        assert (
            fac["capture_status_code"] == "PARTIAL_SUCCESS"
            and "owed" in fac["capture_status_message"]
        )
    gross = fac["total_costs"]["before_taxes"] + sum(
        t["amount"] for t in fac["total_costs"].get("taxes", [])
    )
    if session_kwh == 6:
        assert (
            round(gross * 100) == 571
        )  # 6 kWh at the CPO's 0.80 + 19 % = 5.712 (not the configured 0.50)
        assert "STOP_SESSION" not in cpo.state.commands
    else:
        assert "STOP_SESSION" in cpo.state.commands  # the engine stopped the charge at the cap
        assert round(gross * 100) <= 200 and cpo.state.cdrs[0]["total_energy"] < 50
    assert "OCPI-SITE-t1" in cpo.state.terminals  # the terminal was announced too
    assert any(
        line.startswith("Invoice INV-") for line in sim.state.printed
    )  # fiscal data on the receipt


async def test_a_pay_request_while_unregistered_is_refused_with_the_reason(tmp_path: Path) -> None:
    cpo = CpoSimulator()
    cpo.state.quirks.add("require_website")  # this CPO refuses our registration
    await cpo.start()
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
    serving = asyncio.create_task(sim.serve_line(port))
    listen = free_port()
    config = ocpi_site(
        tmp_path / "u.sqlite3",
        port.slave_path,
        cpo,
        listen,
        "[daemon]\nrestart_backoff_min_s = 5\n",
        tariffs=[tariff_toml(vat=None)],  # every EVSE is priced (issue 26 item 13), also before
    )  # the CPO's tariffs come
    config_file = tmp_path / "u.toml"
    config_file.write_text(config, encoding="utf-8")
    daemon = Daemon(parse_settings(config, "<unregistered>"))
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10):
            while daemon.api.bound_port is None or daemon.store.upstream_status() is None:
                await asyncio.sleep(0.05)
        api = f"http://127.0.0.1:{daemon.api.bound_port}"
        async with aiohttp.ClientSession() as http:
            ids = {"X-Request-ID": "kiosk-1", "X-Correlation-ID": "tap-7"}
            async with http.post(f"{api}/evses/E1/pay", headers=ids, json={}) as r:
                answer = await r.json()
                assert (r.headers["X-Request-ID"], r.headers["X-Correlation-ID"]) == (
                    "kiosk-1",
                    "tap-7",
                )
            assert r.status == 503 and answer["error"].startswith("upstream: not registered — ")
            assert "website is required" in answer["error"]  # the CPO's own message
            async with http.get(f"{api}/health") as r:
                health = await r.json()
            assert r.status == 503 and health["upstream"].startswith("not registered — ")
        assert daemon.store.sessions() == []  # nothing was started, nothing parked
        async with asyncio.timeout(10):
            while not daemon.store.outbox.backlog().pending:  # the terminal's announcement waits
                await asyncio.sleep(0.05)
        waiting = subprocess.run(
            [*EVPAY, "outbox", "list", "--config", str(config_file)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            check=False,
        )
        assert (
            "waiting: upstream not registered — " in waiting.stdout
            and "website is required" in waiting.stdout
        )
    finally:
        daemon.request_stop("test over")
        await task
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await port.close()
        await cpo.stop()
