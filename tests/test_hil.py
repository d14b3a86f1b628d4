"""The HIL runner against the simulator on a pty: every acceptance scenario runs and is
reported; a terminal fault shows as a failed scenario, and the others still run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import deque
from pathlib import Path

from drivers.sim.terminal import SimConfig
from hil.profiles import PROFILES
from hil.runner import SCENARIOS, human, run
from tests.helpers import subprocess_env


def test_every_scenario_passes_on_the_simulator_and_is_reported(tmp_path: Path) -> None:
    report = tmp_path / "hil.json"
    out = subprocess.run(
        [sys.executable, "-m", "hil", "run", "--device", "sim", "--report", str(report), "--yes"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(report.read_text())
    assert [s["name"] for s in data["scenarios"]] == list(SCENARIOS) and data["passed"]
    text = report.with_suffix(".txt").read_text()
    assert all(f"PASS {name}" in text for name in SCENARIOS) and "ALL PASSED" in text


async def test_a_fault_fails_its_scenario_and_the_run_goes_on() -> None:
    prompts: list[str] = []
    faulty = SimConfig(
        password="000000", card_wait_s=0.05, booking_faults=deque([0xA0])
    )  # acquirer down once
    report = await run("sim", PROFILES["feig-cvend-plug"], prompts.append, faulty)
    results = {s["name"]: s for s in report["scenarios"]}
    assert not report["passed"] and not results["preauth_capture"]["passed"]
    assert "capture (book_total)" in results["preauth_capture"]["detail"]
    assert all(
        results[n]["passed"] for n in SCENARIOS if n not in ("preauth_capture", "end_of_day")
    )
    assert prompts == []  # the simulator plays the card: nobody is asked
    assert "quirk: End-of-Day is refused while a pre-authorisation is open" in human(report)
