"""`evpay simulate terminal --pty` and `evpay terminal …` as a technician runs them."""

from __future__ import annotations

import json
import re
import signal
import subprocess

from tests.helpers import EVPAY, subprocess_env


def test_terminal_cli_against_the_simulator_on_a_pty() -> None:
    sim = subprocess.Popen(
        [*EVPAY, "simulate", "terminal", "--pty", "--card-wait", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        device = re.search(r"use (serial://\S+)\)", line)
        assert device, line
        url = device.group(1)

        def evpay(*args: str, password: str | None = "000000") -> subprocess.CompletedProcess[str]:  # noqa: S107 - the simulator's password
            env = {k: v for k, v in subprocess_env().items() if k != "EVPAY_ZVT_PASSWORD"}
            if password is not None:
                env["EVPAY_ZVT_PASSWORD"] = password
            return subprocess.run(
                [*EVPAY, "terminal", *args, "--device", url],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
                check=False,
            )

        pre = evpay("preauth", "--amount", "25.00", "--json")
        assert pre.returncode == 0, pre.stdout + pre.stderr
        result = json.loads(pre.stdout)
        assert result["outcome"] == "approved" and result["amount"] == "25.00 EUR"
        assert isinstance(result["ref"], str)  # the hold's reference: text (its receipt number)
        listed = evpay("open-preauths")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert f"open pre-authorisations: {result['ref']}" in listed.stdout
        assert result["card"]["masked_pan"] == "541333******0074"
        cap = evpay(
            "partial-reverse",
            "--ref",
            str(result["ref"]),
            "--held",
            "25.00",
            "--amount",
            "7.50",
        )
        assert (
            cap.returncode == 0 and "capture: APPROVED" in cap.stdout and "7.50 EUR" in cap.stdout
        )
        again = evpay("release", "--receipt", str(result["ref"]), "--held", "25.00")
        assert again.returncode == 1 and "already reversed" in again.stdout
        bad = evpay("preauth", "--amount", "1.005")
        assert (
            bad.returncode == 2 and "more decimals" in bad.stderr and "Traceback" not in bad.stderr
        )
        bad_json = evpay("preauth", "--amount", "1.005", "--json")
        assert bad_json.returncode == 2 and json.loads(bad_json.stdout)["exit_code"] == 2
        nopass = evpay("status", password=None)  # no silent factory default
        assert nopass.returncode == 2 and "no ZVT password" in nopass.stderr
        wrong = evpay("status", password="999999")
        assert wrong.returncode == 1 and "check the ZVT password" in wrong.stderr
        short = evpay("status", password="12345")
        assert short.returncode == 2 and "exactly 6 digits" in short.stderr
        countdown = evpay("read-card", "--timeout", "3")
        assert countdown.returncode == 0 and "present a card at the terminal:" in countdown.stderr
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=10)


def test_terminal_cli_errors_are_one_line_with_a_documented_code(tmp_path: object) -> None:
    def evpay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*EVPAY, "terminal", *args],
            capture_output=True,
            text=True,
            env=env or {**subprocess_env(), "EVPAY_ZVT_PASSWORD": "000000"},
            timeout=30,
            check=False,
        )

    cases = [
        (
            ("status", "--device", "usb://0x0403:0x6001"),
            69,
            None,
        ),  # no USB device (or no libusb backend)
        (("status", "--device", "tcp://127.0.0.1:1"), 69, "cannot connect"),
        (
            ("status", "--device", "tcp://127.0.0.1:1", "--password-file", "/nonexistent/pw"),
            2,
            "cannot read",
        ),
        (("status", "--device", "ftp://x"), 2, None),
        (("capture", "--device", "tcp://127.0.0.1:1"), 69, None),
    ]
    for args, code, text in cases:
        result = evpay(*args)
        assert result.returncode == code, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.count("\n") <= 2, result.stderr
        if text:
            assert text in result.stderr
        as_json = evpay(*args, "--json")
        assert as_json.returncode == code and json.loads(as_json.stdout)["exit_code"] == code
