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
from tests.zvt.test_real_traces import check_expect, decode_record


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


async def test_every_scenario_passes_on_the_nexo_poi_simulator() -> None:
    """The runner builds the terminal through the driver registry: the same scenarios on a
    nexo POI (its simulator waits for the card, refuses a declined one, and answers Aborted
    when the sale system aborts the wait), nobody asked."""
    prompts: list[str] = []
    report = await run("sim", PROFILES["zvt-tcp"], prompts.append, protocol="nexo")
    failed = [(s["name"], s["detail"]) for s in report["scenarios"] if not s["passed"]]
    assert failed == [] and report["passed"] and prompts == []
    details = {s["name"]: s["detail"] for s in report["scenarios"]}
    assert "declined" in details["decline"] and "aborted" in details["abort"]


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


async def test_the_run_writes_a_byte_trace_that_is_a_golden_test_as_it_stands(
    tmp_path: Path,
) -> None:
    """``--trace``: every APDU of the run, in the zvt-real-traces format. Each record decodes
    to its recorded expectations and re-encodes to its bytes -- the same check the golden tests
    make -- and a card number the terminal sent unmasked is masked in the file."""
    full_pan = "5413330089010074"
    config = SimConfig(password="000000", card_wait_s=0.05, pan=full_pan)
    trace = tmp_path / "bench-trace.json"
    report = await run("sim", PROFILES["zvt-serial"], print, config, trace=trace, model="sim")
    assert report["passed"]
    text = trace.read_text(encoding="utf-8")
    records = json.loads(text)
    assert {r["direction"] for r in records} == {"ECR->PT", "PT->ECR"}
    commands = {r["expect"]["command"] for r in records}
    assert {"0600", "0622", "040F", "060F", "8000", "0650"} <= commands
    assert {r["provenance"].rsplit(" ", 1)[-1] for r in records} >= set(SCENARIOS)
    assert full_pan not in text and "5413330089010074" not in text.replace(" ", "")
    assert any(r.get("masked_by_us") for r in records)
    for record in records:
        msg, raw, encode = decode_record(record)
        assert encode(msg) == raw, record["id"]
        check_expect(msg, record["expect"])


async def test_a_latin1_terminals_trace_names_its_character_set(tmp_path: Path) -> None:
    config = SimConfig(password="000000", card_wait_s=0.05)
    config.variants.charset, config.variants.receipt_title = "iso-8859-1", "** HÄNDLERBELEG **"
    trace = tmp_path / "trace.json"
    report = await run(
        "sim", PROFILES["zvt-serial"], print, config, trace=trace, charset="iso-8859-1"
    )
    assert report["passed"]
    records = json.loads(trace.read_text(encoding="utf-8"))
    assert all(r["charset"] == "iso-8859-1" for r in records)
    blocks = [decode_record(r)[0] for r in records if r["expect"]["command"] == "06D3"]
    assert blocks and all(b.text_lines[0] == "** HÄNDLERBELEG **" for b in blocks)
