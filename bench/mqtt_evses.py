"""64 simulated EVSEs over a real mosquitto, meter values every second, against the real daemon
(`evpay run` in its own process): the gateway's CPU and RSS, and the latency from a charger's
meter message to the engine's stored step (median, p99).

    python bench/mqtt_evses.py [--evses 64] [--terminals 16] [--seconds 60]

Needs mosquitto (apt-get install mosquitto). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from firmware_bridge.broker import GATEWAY_USER, acl, mosquitto_conf, password_file
from firmware_bridge.link import BrokerSettings
from firmware_bridge.sim import ChargerSimulator, Plan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


async def main(evses: int, terminals: int, seconds: int) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    work = Path(tempfile.mkdtemp(prefix="evpay-bench-mqtt-"))
    port = free_port()
    # The broker as a site has it (users, ACL): the benchmark measures what a site runs.
    passwords = {GATEWAY_USER: "bench-gateway", "charger": "bench-charger"}
    (work / "m.passwd").write_text(password_file(passwords), encoding="utf-8")
    (work / "m.acl").write_text(acl(), encoding="utf-8")
    conf = mosquitto_conf(
        port=port, password_path=str(work / "m.passwd"), acl_path=str(work / "m.acl")
    )
    (work / "m.conf").write_text(
        conf + ("user root\n" if os.geteuid() == 0 else ""), encoding="utf-8"
    )
    broker = subprocess.Popen([mosquitto, "-c", str(work / "m.conf")], stderr=subprocess.DEVNULL)  # noqa: ASYNC220 - set-up
    ports = [PtyPort() for _ in range(terminals)]
    sims = [SimTerminal(SimConfig(password="123456", card_wait_s=0.05)) for _ in range(terminals)]  # noqa: S106
    serving = [
        asyncio.create_task(s.serve(p, serial=True)) for s, p in zip(sims, ports, strict=True)
    ]
    ids = [f"E{n:03d}" for n in range(evses)]
    config = [
        f'[site]\nid = "BENCH"\ncountry = "DE"\n[storage]\npath = "{work}/b.sqlite3"\n[api]\nport '
        f"= {free_port()}\n"
    ]
    for t, p in enumerate(ports):
        config.append(
            f'[[terminals]]\nid = "t{t}"\ndevice = "serial://{p.slave_path}"\npassword = '
            f'{{ value = "123456" }}\n'
        )
    config.append(
        f'[charger]\nenabled = true\nmode = "mqtt"\nbroker = "mqtt://127.0.0.1:{port}"\n'
        f'username = "{GATEWAY_USER}"\npassword = {{ value = "{passwords[GATEWAY_USER]}" }}\n'
    )
    for n, evse in enumerate(ids):
        config.append(f'[[charger.evses]]\nid = "{evse}"\nterminal = "t{n % terminals}"\n')
    config.append(
        '[pricing]\nhold_min = "1.00"\ndefault_tariff = "T"\ntariffs = [ '
        '{ id = "T", currency = "EUR", '
        "elements = [ "
        '{ price_components = [ { type = "ENERGY", price = "0.50", vat = "19", '
        "step_size = 1 } ] } ] } ]\n"
    )
    (work / "g.toml").write_text("".join(config), encoding="utf-8")
    await asyncio.sleep(0.3)
    daemon = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(work / "g.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    plan = Plan(
        energy_wh=seconds * 3_000, step_wh=3_000, interval_s=1.0
    )  # ~11 kW, a meter value each second
    charger_user = BrokerSettings(
        url=f"mqtt://127.0.0.1:{port}", username="charger", password=passwords["charger"]
    )
    charger = ChargerSimulator(charger_user, ids, plan)
    sent: dict[tuple[str, int], float] = {}
    publish = charger.publish

    async def timed(evse: str, name: str, payload: dict[str, object] | bytes) -> None:
        if name == "meter" and isinstance(payload, dict):
            sent[(str(payload["session_id"]), int(str(payload["seq"])))] = time.time()
        await publish(evse, name, payload)

    charger.publish = timed  # type: ignore[method-assign]  # the bench times each publish
    stopping = asyncio.Event()
    task = asyncio.create_task(charger.run(stopping))
    await charger.ready.wait()
    while "online" not in charger.gateway_status:  # noqa: ASYNC110 - the simulator only records it
        await asyncio.sleep(0.1)
    cpu0, _ = proc_stats(daemon.pid)
    t0 = time.monotonic()
    for evse in ids:
        await charger.plug(evse)
    rss_peak = 0
    deadline = t0 + seconds + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        _, rss = proc_stats(daemon.pid)
        rss_peak = max(rss_peak, rss)
        if all(s.charging is not None and s.charging.done() for s in charger.evses.values()):
            break
    await asyncio.sleep(2)
    cpu1, _ = proc_stats(daemon.pid)
    wall = time.monotonic() - t0
    daemon.terminate()
    daemon.wait(timeout=20)
    stopping.set()
    await asyncio.gather(task, return_exceptions=True)
    conn = sqlite3.connect(work / "b.sqlite3")
    latencies = []
    for entity, at, data in conn.execute(
        "SELECT entity_id, at, data FROM journal WHERE kind = 'MeterValue'"
    ):
        event_id = __import__("json").loads(data)["event_id"]
        seq = int(event_id.split(":")[1])
        started = sent.get((entity, seq))
        if started is not None:
            stored = datetime.fromisoformat(at).timestamp()
            latencies.append((stored - started) * 1000)
    states = dict(conn.execute("SELECT state, count(*) FROM sessions GROUP BY state").fetchall())
    conn.close()
    for s in serving:
        s.cancel()
    broker.terminate()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    print(
        f"machine: {os.cpu_count()} cores; {evses} EVSEs on {terminals} simulated terminals, "
        f"meter values every 1 s"
    )
    print(f"sessions: {states}")
    print(
        f"gateway CPU: {cpu1 - cpu0:.1f} s over {wall:.0f} s wall "
        f"({100 * (cpu1 - cpu0) / wall:.1f} % of one core)"
    )
    print(f"gateway RSS peak: {rss_peak / 2**20:.1f} MiB")
    median = statistics.median(latencies) if latencies else float("nan")
    print(
        f"meter message -> stored engine step: {len(latencies)} samples, median {median:.1f} ms, "
        f"p99 {p99:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--evses", type=int, default=64)
    parser.add_argument("--terminals", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=60, help="how long each EV charges")
    a = parser.parse_args()
    asyncio.run(main(a.evses, a.terminals, a.seconds))
