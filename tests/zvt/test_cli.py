"""`evpay simulate terminal --pty` and `evpay terminal …` as a technician runs them."""

from __future__ import annotations

import json
import re
import signal
import subprocess

from tests.helpers import EVPAY, subprocess_env


def test_terminal_cli_against_the_simulator_on_a_pty() -> None:
    sim = subprocess.Popen([*EVPAY, "simulate", "terminal", "--pty", "--card-wait", "0.05"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=subprocess_env())  # fmt: skip
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        device = re.search(r"use (serial://\S+)\)", line)
        assert device, line
        url = device.group(1)

        def evpay(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*EVPAY, "terminal", *args, "--device", url], capture_output=True, text=True,
                                  env=subprocess_env(), timeout=30, check=False)  # fmt: skip

        pre = evpay("preauth", "--amount", "25.00", "--json")
        assert pre.returncode == 0, pre.stdout + pre.stderr
        result = json.loads(pre.stdout)
        assert result["outcome"] == "approved" and result["amount"] == "25.00 EUR"
        assert result["card"]["masked_pan"] == "541333******0074"
        cap = evpay("partial-reverse", "--receipt", str(result["receipt_no"]), "--held", "25.00", "--amount", "7.50")
        assert cap.returncode == 0 and "capture: APPROVED" in cap.stdout and "7.50 EUR" in cap.stdout
        again = evpay("release", "--receipt", str(result["receipt_no"]), "--held", "25.00")
        assert again.returncode == 1 and "already reversed" in again.stdout
        bad = evpay("preauth", "--amount", "1.005")
        assert bad.returncode == 2 and "more decimals" in bad.stdout
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=10)
