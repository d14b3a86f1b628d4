"""``evpay`` starts fast: building its parser and parsing a command line imports only light
modules; a command's heavy imports (aiohttp, the daemon, the settings model, the store) happen
when that command runs. The test suite and a technician on a slow site controller start
``evpay`` hundreds of times (issue 25: ~1.7 s of imports each time before this)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

HEAVY = ("aiohttp", "gateway.runtime.app", "gateway.settings", "gateway.store", "pydantic")

_PROBE = """
import contextlib, io, json, sys
from gateway.cli import build_parser
parser = build_parser()
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    parser.parse_args(["--help"])
for argv in json.loads(sys.argv[1]):
    parser.parse_args(argv)
print(json.dumps(sorted(sys.modules)))
"""

COMMAND_LINES = [
    ["run", "--config", "site.toml"],
    ["status", "--config", "site.toml"],
    ["config", "validate", "site.toml"],
    ["doctor", "--config", "site.toml"],
    ["sessions", "list", "--config", "site.toml"],
    ["outbox", "list", "--config", "site.toml"],
    ["terminal", "status", "--device", "tcp://127.0.0.1:1"],
    ["journal", "verify", "--config", "site.toml"],
    ["store", "check", "--config", "site.toml"],
    ["reconcile", "--config", "site.toml"],
    ["meter", "verify", "OCMF|{}|{}", "--key", "00"],
    ["simulate", "terminal", "--pty"],
    ["simulate", "cpo"],
    ["demo"],
    ["install", "--root", "/tmp/x"],
]


def test_parsing_any_command_line_imports_no_heavy_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(COMMAND_LINES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == [], f"imported while parsing (import these in the handler): {heavy}"


def test_a_choice_from_a_heavy_module_is_still_checked() -> None:
    """The lazily read choices refuse a wrong value as argparse's own do (exit 2)."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", "cpo", "--quirk", "nonsense"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid choice: 'nonsense'" in done.stderr
    assert "auth403" in done.stderr
