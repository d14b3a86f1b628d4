"""The benches keep working: `bench/run --quick` prints its whole table (sizes far too small
for the figures to mean anything; the figures themselves live in bench/RESULTS.md)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import REPO, subprocess_env


def test_bench_run_quick_prints_every_figure_against_its_anchor() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run"), "--quick"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("bench/run --quick") and "Python" in lines[0]
    for figure in (
        "ZVT encode+decode",
        "serial framing decode",
        "durable engine steps",
        "outbox drain",
        "restart to READY",
        "store size per finished session",
    ):
        row = next((line for line in lines if line.startswith(figure)), None)
        assert row is not None, f"{figure} missing from:\n{run.stdout}"
        assert re.search(r"\s(\d+(\.\d+)?x|\d+%)\s", row), row  # a ratio against the anchor
