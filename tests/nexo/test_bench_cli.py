"""`evpay terminal … --protocol nexo` (the bench checks) against `evpay simulate terminal
--protocol nexo`, both as a technician runs them: two processes over loopback HTTP."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

from tests.helpers import EVPAY, subprocess_env


def test_bench_status_preauth_capture_release_on_a_nexo_poi(tmp_path: Path) -> None:
    sim = subprocess.Popen(
        [*EVPAY, "simulate", "terminal", "--protocol", "nexo", "--listen", "http://127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+/EPASSaleToPOI/3\.1)", line)
        assert match, line
        device = match.group(1)

        def evpay(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*EVPAY, "terminal", *args, "--device", device, "--protocol", "nexo"],
                capture_output=True,
                text=True,
                env=subprocess_env(),  # no ZVT password anywhere: nexo has none
                cwd=tmp_path,  # the driver's state file (ServiceIDs, handles) lives here
                timeout=60,
                check=False,
            )

        status = evpay("status")
        assert status.returncode == 0 and "APPROVED" in status.stdout, status.stderr
        pre = evpay("preauth", "--amount", "20.00", "--json")
        assert pre.returncode == 0, pre.stdout + pre.stderr
        handle = json.loads(pre.stdout)["ref"]
        cap = evpay("capture", "--receipt", str(handle), "--amount", "7.50")
        assert cap.returncode == 0 and "7.50 EUR" in cap.stdout, cap.stdout + cap.stderr
        second = evpay("preauth", "--amount", "10.00", "--json")
        rel = evpay(
            "release", "--receipt", str(json.loads(second.stdout)["ref"]), "--held", "10.00"
        )
        assert rel.returncode == 0 and "APPROVED" in rel.stdout, rel.stdout + rel.stderr
        unknown = evpay("release", "--receipt", "999", "--held", "1.00")
        assert unknown.returncode == 1 and "unknown hold" in unknown.stdout
        bad = evpay("status", "--poi-id", "no spaces allowed")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    finally:
        sim.send_signal(signal.SIGTERM)
        out, _ = sim.communicate(timeout=10)
    assert "booked 7.50" in out  # the POI's own ledger: the capture only, the release nothing
