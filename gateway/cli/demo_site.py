"""``evpay demo``: the embedded site simulation, run by the daemon's own code end to end.

A simulated ZVT terminal on a pty (the real wire protocol with serial framing), a simulated
nexo POI on loopback HTTP (nexo 3.1 XML), the real daemon (store, supervisor, engine worker,
both drivers built from the config through the registry, local API) on the embedded demo
config in a temporary directory, and the charger: a few driver sessions on the ZVT EVSE —
a normal charge, a declined card, a charger fault mid-charge, an EV that never starts — and
one on the nexo EVSE, then a summary read back from the store and the POI's own ledger.
Nothing here is canned output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from pydantic import SecretStr

from drivers.money import Money
from drivers.nexo.wire import PATHS
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from firmware_bridge.broker import GATEWAY_USER, mosquitto_conf, password_file
from firmware_bridge.broker import acl as broker_acl
from firmware_bridge.link import BrokerSettings
from firmware_bridge.sim import ChargerSimulator, Plan
from gateway.errors import GatewayError
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.runtime import logs
from gateway.runtime.app import Daemon
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.runtime.mqtt_charger import MqttChargerLink
from gateway.settings import SecretRef, Settings, UpstreamSettings, parse_settings

SCENARIOS: list[tuple[str, str, Plan]] = [
    (
        "a driver charges 18 kWh and leaves",
        "approve",
        Plan(energy_wh=18_000, step_wh=1_500, interval_s=0.02),
    ),
    ("a card is declined", "decline", Plan(interval_s=0.02)),
    (
        "the charger faults at 6 kWh",
        "approve",
        Plan(energy_wh=20_000, step_wh=1_000, interval_s=0.02, fault_after_wh=6_000),
    ),
    ("the EV never starts charging", "approve", Plan(never_start=True)),
]
NEXO_SCENARIOS: list[tuple[str, Plan]] = [
    ("a driver pays at the nexo terminal", Plan(energy_wh=8_000, step_wh=1_000, interval_s=0.02)),
]
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


class _Broker:
    """The demo's own mosquitto on a free port (the README's first command installs it), set up
    as a site's is: a user per client with a fresh password, the ACL (firmware_bridge/broker.py)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.passwords = {user: secrets.token_urlsafe(16) for user in (GATEWAY_USER, "charger")}
        passwd, acl = workdir / "mosquitto.passwd", workdir / "mosquitto.acl"
        passwd.write_text(password_file(self.passwords), encoding="utf-8")
        acl.write_text(broker_acl(), encoding="utf-8")
        conf = mosquitto_conf(port=self.port, password_path=str(passwd), acl_path=str(acl))
        if os.geteuid() == 0:  # mosquitto would drop to its own user, who cannot read workdir
            conf += "user root\n"
        (workdir / "mosquitto.conf").write_text(conf, encoding="utf-8")
        assert MOSQUITTO is not None  # noqa: S101 - checked by the caller
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(workdir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        async with asyncio.timeout(10):
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                        return
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_settings(
    workdir: Path,
    devices: dict[str, str],
    cpo: CpoSimulator,
    broker: str | None = None,
    broker_password: str | None = None,
) -> Settings:
    """The embedded demo config with each terminal's device replaced by its simulator's."""
    text = resources.files("gateway.demo").joinpath("demo.toml").read_text(encoding="utf-8")
    settings = parse_settings(text, "<embedded demo.toml>")
    storage = settings.storage.model_copy(update={"path": workdir / "evpay.sqlite3"})
    api = settings.api.model_copy(
        update={"port": 0}
    )  # any free port: never clash with a live daemon
    terminals = [t.model_copy(update={"device": devices[t.id]}) for t in settings.terminals]
    ocpi_port = (
        free_port()
    )  # the strict CPO calls our versions back before it answers the registration
    upstream = UpstreamSettings(
        enabled=True,
        versions_url=cpo.versions_url,
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        allow_insecure_http=True,  # the embedded CPO on loopback
        key=SecretRef(value=SecretStr(Fernet.generate_key().decode("ascii"))),
        business_name="EVPay Edge demo",
        listen=f"127.0.0.1:{ocpi_port}",
        public_url=f"http://127.0.0.1:{ocpi_port}/ocpi/versions",
    )
    update: dict[str, Any] = {
        "storage": storage,
        "api": api,
        "terminals": terminals,
        "upstream": upstream,
    }
    if broker is not None:  # the charger firmware over a real broker, as on a site
        password = SecretRef(value=SecretStr(broker_password or ""))
        update["charger"] = settings.charger.model_copy(
            update={
                "mode": "mqtt",
                "broker": broker,
                "username": GATEWAY_USER,
                "password": password,
            }
        )
    return settings.model_copy(update=update)


def demo(args: argparse.Namespace) -> int:
    """``evpay demo`` (its parser is in demo_cmd, which imports this module when it runs)."""
    logs.configure("info" if args.verbose else "warning")
    os.environ.setdefault("EVPAY_ZVT_PASSWORD", "000000")
    with tempfile.TemporaryDirectory(prefix="evpay-demo-") as tmp:
        return asyncio.run(_run(Path(tmp)))


async def _run(workdir: Path) -> int:
    port = PtyPort()
    sim = SimTerminal(SimConfig(password=os.environ["EVPAY_ZVT_PASSWORD"], card_wait_s=0.2))
    terminal_task = asyncio.create_task(sim.serve_line(port))
    poi = NexoPoi(PoiConfig(encoding="xml"))
    poi_runner, poi_port = await serve_nexo_poi(poi)
    cpo = CpoSimulator()
    await cpo.start()
    broker = _Broker(workdir) if MOSQUITTO else None
    stopping = asyncio.Event()
    charger_task = None
    try:
        if broker is not None:
            await broker.ready()
        url = f"mqtt://127.0.0.1:{broker.port}" if broker else None
        gateway = broker.passwords[GATEWAY_USER] if broker else None
        devices = {
            "t1": f"serial://{port.slave_path}",
            "n1": f"http://127.0.0.1:{poi_port}{PATHS['xml']}",
        }
        settings = demo_settings(workdir, devices, cpo, url, gateway)
        daemon = Daemon(settings)
        evse, nexo_evse = (e.id for e in settings.charger.evses)
        mqtt_charger = None
        if broker is not None and url is not None:  # the charger firmware, as its own user
            charger = BrokerSettings(
                url=url, username="charger", password=broker.passwords["charger"]
            )
            mqtt_charger = ChargerSimulator(charger, [evse, nexo_evse])
        if mqtt_charger is not None:
            charger_task = asyncio.create_task(mqtt_charger.run(stopping))
        where = (
            f"charger simulator on mosquitto {url}"
            if url
            else "in-process charger (mosquitto not installed)"
        )
        print(
            f"demo: site {settings.site.id}; ZVT terminal simulator on {port.slave_path}; "
            f"nexo POI simulator on {devices['n1']}; {where}; embedded CPO at {cpo.base}"
        )
        print(f"demo: database {settings.storage.path}")
        task = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(15):
                await daemon.ready.wait()
                if mqtt_charger is not None:
                    await mqtt_charger.ready.wait()
                    assert isinstance(daemon.charger, MqttChargerLink)  # noqa: S101 - the demo's own config
                    await daemon.charger.connected.wait()
            if daemon.engine is None:
                raise GatewayError("the demo config must enable the charger link")
            for title, outcome, plan in SCENARIOS:
                sim.config.outcomes.append(outcome)
                _print_session(title, await _plug(daemon, mqtt_charger, evse, plan))
            for title, plan in NEXO_SCENARIOS:
                _print_session(title, await _plug(daemon, mqtt_charger, nexo_evse, plan))
            print(
                f"demo: the nexo POI's own ledger: {len(poi.ledger)} transaction(s), booked "
                f"{poi.booked()} EUR, {len(poi.open_reservations())} reservation(s) open"
            )
            await _print_daemon(daemon, settings, cpo)
        finally:
            daemon.request_stop("demo finished")
            code = await task
    finally:
        stopping.set()
        if charger_task is not None:
            await asyncio.gather(charger_task, return_exceptions=True)
        if broker is not None:
            broker.stop()
        terminal_task.cancel()
        await asyncio.gather(terminal_task, return_exceptions=True)
        await port.close()
        await poi_runner.cleanup()
        await cpo.stop()
    print(f"demo: daemon stopped cleanly (exit {code})")
    return code


async def _plug(
    daemon: Daemon, mqtt_charger: ChargerSimulator | None, evse: str, plan: Plan
) -> dict[str, Any]:
    """One driver at ``evse``: plugged in, charged as ``plan`` says; the session's final row."""
    before = {r["id"] for r in daemon.store.sessions(limit=100)}
    if mqtt_charger is not None:
        await mqtt_charger.plug(evse, plan=plan)
    elif isinstance(daemon.charger, SimulatedCharger):
        daemon.charger.plug_in(
            evse,
            EvsePlan(
                plan.energy_wh,
                plan.step_wh,
                never_start=plan.never_start,
                fault_after_wh=plan.fault_after_wh,
            ),
        )
    return await _finished(daemon, before)


async def _finished(daemon: Daemon, before: set[str]) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            rows = [r for r in daemon.store.sessions(limit=100) if r["id"] not in before]
            if rows and rows[0]["final"]:
                return rows[0]
            await asyncio.sleep(0.05)


def _print_session(title: str, row: dict[str, Any]) -> None:
    d = row["data"]
    cur = d["currency"]
    card = d["card"].get("masked_pan", "-")
    print(f"\n- {title}")
    print(f"  session {row['id']}  state {row['state']}  card {card}  ref {d['ref']}")
    print(
        f"  energy {d['billed_energy_wh'] / 1000:.1f} kWh  price {Money(d['price_minor'], cur)}  "
        f"held {Money(d['authorized_minor'], cur)}  captured {Money(d['captured_minor'], cur)}  "
        f"released {Money(d['released_minor'], cur)}"
    )
    for note in d["notes"]:
        print(f"  note: {note}")


async def _print_daemon(daemon: Daemon, settings: Settings, cpo: CpoSimulator) -> None:
    async with asyncio.timeout(15):
        while daemon.store.outbox.backlog().pending:  # noqa: ASYNC110 - the store has no change events; a display loop
            await asyncio.sleep(0.05)
    base = f"http://{settings.api.host}:{daemon.api.bound_port}"
    async with aiohttp.ClientSession() as http, http.get(f"{base}/status") as r:
        status = await r.json()
    print(
        f"\ndemo: daemon on {base}: "
        + ", ".join(f"{w['name']} {w['state']}" for w in status["workers"])
    )
    print(
        f"demo: outbox {status['outbox']['pending']} pending, {status['outbox']['dead']} dead; "
        f"the CPO registered us and received {len(cpo.state.facs)} Financial Advice "
        f"Confirmation(s):"
    )
    print(
        f"demo: the CPO called our OCPI endpoints back while registering: "
        f"{', '.join(cpo.state.callbacks)}"
    )
    for fac in cpo.state.facs.values():
        total = fac["total_costs"]
        taxes = sum(t["amount"] for t in total.get("taxes", []))
        print(
            f"demo:   {fac['authorization_reference']}  {fac['capture_status_code']}  "
            f"{total['before_taxes']:.2f} + {taxes:.2f} tax {fac['currency']}  eft "
            f"{fac['eft_data']}"
        )
    print(f"demo: journal hash chain intact: {daemon.store.verify_journal().ok}")
