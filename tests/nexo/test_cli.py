"""`evpay simulate terminal --protocol nexo` as a technician runs it, driven by NexoTerminal."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path

from drivers.money import Money
from drivers.nexo.asyncio.client import NexoOptions
from drivers.nexo.asyncio.terminal import NexoTerminal
from tests.helpers import EVPAY, subprocess_env
from tests.nexo.conftest import KEY, receipt, self_signed


async def test_simulate_terminal_protocol_nexo_xml(tmp_path: Path) -> None:
    sim = subprocess.Popen(
        [
            *EVPAY,
            "simulate",
            "terminal",
            "--protocol",
            "nexo",
            "--encoding",
            "xml",
            "--listen",
            "http://127.0.0.1:0",
            "--lose-answers",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert sim.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(sim.stdout.readline), 30)
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+/EPASSaleToPOI/3\.1)", line)
        assert match, line
        options = NexoOptions(
            url=match.group(1), poi_id="POI-SIM-1", retry_s=0.05, state_path=tmp_path / "s.json"
        )
        term = NexoTerminal("bench", options)
        assert (await term.status()).approved
        pa = await term.preauthorize(Money(2000, "EUR"), "bench")  # answer lost, then asked
        assert pa.approved and pa.amount == Money(2000, "EUR")
        assert (
            await term.capture(receipt(pa), Money(2000, "EUR"), Money(1500, "EUR"), "b")
        ).approved
        await term.close()
    finally:
        sim.send_signal(signal.SIGTERM)
        out, _ = sim.communicate(timeout=10)
    assert sim.returncode == 0
    assert "1 transactions, booked 15.00" in out


def test_simulate_terminal_nexo_refuses_non_loopback() -> None:
    done = subprocess.run(
        [*EVPAY, "simulate", "terminal", "--protocol", "nexo", "--listen", "http://0.0.0.0:1"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "127.0.0.1" in done.stdout


async def test_simulate_terminal_protocol_nexo_adyen_json_over_pinned_https(tmp_path: Path) -> None:
    _, fingerprint = self_signed(tmp_path)  # writes poi.crt / poi.key for the simulator
    env = {**subprocess_env(), "EVPAY_NEXO_PASSPHRASE": KEY.passphrase}
    sim = subprocess.Popen(
        [
            *EVPAY,
            "simulate",
            "terminal",
            "--protocol",
            "nexo",
            "--encoding",
            "adyen-json",
            "--listen",
            "https://127.0.0.1:0",
            "--key-id",
            KEY.identifier,
            "--tls-cert",
            str(tmp_path / "poi.crt"),
            "--tls-key",
            str(tmp_path / "poi.key"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert sim.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(sim.stdout.readline), 30)
        match = re.search(
            r"\(adyen-json, encrypted\) listening on (https://127\.0\.0\.1:\d+/nexo)", line
        )
        assert match, line
        options = NexoOptions(
            url=match.group(1),
            encoding="adyen-json",
            poi_id="POI-SIM-1",
            key=KEY,
            pinned_sha256=fingerprint,
            state_path=tmp_path / "s.json",
        )
        term = NexoTerminal("bench", options)
        assert (await term.sale(Money(990, "EUR"))).approved
        await term.close()
    finally:
        sim.send_signal(signal.SIGTERM)
        out, _ = sim.communicate(timeout=10)
    assert sim.returncode == 0 and "booked 9.90" in out
