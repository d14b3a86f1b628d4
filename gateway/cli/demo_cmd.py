"""``evpay demo``: the embedded site simulation, run by the daemon's own code end to end.

A simulated ZVT terminal on a pty (the real wire protocol with serial framing), the real
daemon (store, supervisor, engine worker, ZVT driver, local API) on the embedded demo
config in a temporary directory, and the in-process charger: a few driver sessions —
a normal charge, a declined card, a charger fault mid-charge, an EV that never starts —
then a summary read back from the store. Nothing here is canned output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from pydantic import SecretStr

from drivers.money import Money
from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.errors import GatewayError
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.runtime import logs
from gateway.runtime.app import Daemon
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.settings import SecretRef, Settings, UpstreamSettings, parse_settings

SCENARIOS: list[tuple[str, str, EvsePlan]] = [
    ("a driver charges 18 kWh and leaves", "approve", EvsePlan(energy_wh=18_000, step_wh=1_500)),
    ("a card is declined", "decline", EvsePlan()),
    ("the charger faults at 6 kWh", "approve", EvsePlan(energy_wh=20_000, step_wh=1_000, fault_after_wh=6_000)),
    ("the EV never starts charging", "approve", EvsePlan(never_start=True)),
]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run the embedded demo site end to end")
    demo.add_argument("--verbose", action="store_true", help="show the daemon's log lines")
    demo.set_defaults(handler=_demo)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_settings(workdir: Path, device: str, cpo: CpoSimulator) -> Settings:
    text = resources.files("gateway.demo").joinpath("demo.toml").read_text(encoding="utf-8")
    settings = parse_settings(text, "<embedded demo.toml>")
    storage = settings.storage.model_copy(update={"path": workdir / "evpay.sqlite3"})
    api = settings.api.model_copy(update={"port": 0})  # any free port: never clash with a live daemon
    terminal = settings.terminals[0].model_copy(update={"device": device})
    ocpi_port = free_port()  # the strict CPO calls our versions back before it answers the registration
    upstream = UpstreamSettings(
        enabled=True, versions_url=cpo.versions_url, token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        allow_insecure_http=True,  # the embedded CPO on loopback
        key=SecretRef(value=SecretStr(Fernet.generate_key().decode("ascii"))), business_name="EVPay Edge demo",
        listen=f"127.0.0.1:{ocpi_port}", public_url=f"http://127.0.0.1:{ocpi_port}/ocpi/versions",
    )  # fmt: skip
    return settings.model_copy(update={"storage": storage, "api": api, "terminals": [terminal], "upstream": upstream})


def _demo(args: argparse.Namespace) -> int:
    logs.configure("info" if args.verbose else "warning")
    os.environ.setdefault("EVPAY_ZVT_PASSWORD", "000000")
    with tempfile.TemporaryDirectory(prefix="evpay-demo-") as tmp:
        return asyncio.run(_run(Path(tmp)))


async def _run(workdir: Path) -> int:
    port = PtyPort()
    sim = SimTerminal(SimConfig(password=os.environ["EVPAY_ZVT_PASSWORD"], card_wait_s=0.2))
    terminal_task = asyncio.create_task(sim.serve(port, serial=True))
    cpo = CpoSimulator()
    await cpo.start()
    settings = demo_settings(workdir, f"serial://{port.slave_path}", cpo)
    daemon = Daemon(settings)
    print(f"demo: site {settings.site.id}; terminal simulator on {port.slave_path}; embedded CPO at {cpo.base}")
    print(f"demo: database {settings.storage.path}")
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(15):
            await daemon.ready.wait()
        charger = daemon.charger
        if not isinstance(charger, SimulatedCharger) or daemon.engine is None:
            raise GatewayError("the demo config must enable the simulated charger")
        evse = settings.charger.evses[0].id
        for title, outcome, plan in SCENARIOS:
            sim.config.outcomes.append(outcome)
            before = {r["id"] for r in daemon.store.sessions(limit=100)}
            charger.plug_in(evse, plan)
            row = await _finished(daemon, before)
            _print_session(title, row)
        await _print_daemon(daemon, settings, cpo)
    finally:
        daemon.request_stop("demo finished")
        code = await task
        terminal_task.cancel()
        await asyncio.gather(terminal_task, return_exceptions=True)
        await port.close()
        await cpo.stop()
    print(f"demo: daemon stopped cleanly (exit {code})")
    return code


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
    print(f"  session {row['id']}  state {row['state']}  card {card}  receipt {d['receipt_no']}")
    print(f"  energy {d['billed_energy_wh'] / 1000:.1f} kWh  price {Money(d['price_minor'], cur)}  "
          f"held {Money(d['authorized_minor'], cur)}  captured {Money(d['captured_minor'], cur)}  "
          f"released {Money(d['released_minor'], cur)}")  # fmt: skip
    for note in d["notes"]:
        print(f"  note: {note}")


async def _print_daemon(daemon: Daemon, settings: Settings, cpo: CpoSimulator) -> None:
    async with asyncio.timeout(15):
        while daemon.store.outbox.backlog().pending:  # noqa: ASYNC110 - the store has no change events; a display loop
            await asyncio.sleep(0.05)
    base = f"http://{settings.api.host}:{daemon.api.bound_port}"
    async with aiohttp.ClientSession() as http, http.get(f"{base}/status") as r:
        status = await r.json()
    print(f"\ndemo: daemon on {base}: " + ", ".join(f"{w['name']} {w['state']}" for w in status["workers"]))
    print(
        f"demo: outbox {status['outbox']['pending']} pending, {status['outbox']['dead']} dead; "
        f"the CPO registered us and received {len(cpo.state.facs)} Financial Advice Confirmation(s):"
    )
    print(f"demo: the CPO called our OCPI endpoints back while registering: {', '.join(cpo.state.callbacks)}")
    for fac in cpo.state.facs.values():
        total = fac["total_costs"]
        taxes = sum(t["amount"] for t in total.get("taxes", []))
        print(
            f"demo:   {fac['authorization_reference']}  {fac['capture_status_code']}  "
            f"{total['before_taxes']:.2f} + {taxes:.2f} tax {fac['currency']}  eft {fac['eft_data']}"
        )
    print(f"demo: journal hash chain intact: {daemon.store.verify_journal().broken_at is None}")
