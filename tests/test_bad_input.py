"""Hostile or careless input at the command line (issue 27): every failure is one line with the
documented exit code, never a traceback, a hang or a MemoryError."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import EVPAY, HANG_GUARD_S, subprocess_env

CONFIG = """[site]
id = "S1"
country = "DE"

[[terminals]]
id = "t1"
device = "tcp://127.0.0.1:20007"
password = {{ file = "{secret}" }}
"""


def _evpay(*args: str, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVPAY, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
        timeout=timeout,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _secret(tmp_path: Path, kind: str) -> Path:
    if kind == "dev-zero":
        return Path("/dev/zero")
    path = tmp_path / "secret"
    if kind == "fifo":
        os.mkfifo(path)  # nobody ever writes it
    else:
        path.write_bytes(bytes(range(256)) * 4)
    return path


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "binary"])
def test_a_secret_that_is_not_a_small_text_file_is_one_line_exit_2(
    tmp_path: Path, kind: str
) -> None:
    config = tmp_path / "evpay.toml"
    config.write_text(CONFIG.format(secret=_secret(tmp_path, kind)), encoding="utf-8")
    result = _evpay("config", "validate", str(config))
    assert result.returncode == 2
    assert "terminals.0.password" in _one_line(result)


@pytest.mark.parametrize("kind", ["binary", "fifo"])
def test_run_with_an_unreadable_secret_is_one_line_exit_78(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "evpay.toml"
    text = CONFIG.format(secret=_secret(tmp_path, kind))
    config.write_text(text + '\n[storage]\npath = "evpay.db"\n', encoding="utf-8")
    result = _evpay("run", "--config", str(config))
    assert result.returncode == 78
    assert "terminals.0.password" in _one_line(result)


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 50_000 + "]" * 50_000 + "\n",
        "x = " + "{ a = " * 5_000 + "1" + " }" * 5_000 + "\n",
        "a" + ".a" * 50_000 + " = 1\n",
    ],
    ids=["50000-nested-arrays", "5000-nested-inline-tables", "50000-part-dotted-key"],
)
def test_a_hostile_toml_is_refused_before_parsing(tmp_path: Path, text: str) -> None:
    config = tmp_path / "evpay.toml"
    config.write_text(text, encoding="utf-8")
    started = time.monotonic()
    result = _evpay("config", "validate", "--skip-secrets", str(config))
    assert time.monotonic() - started < HANG_GUARD_S
    assert result.returncode == 2
    assert "refused before parsing" in _one_line(result)


def test_a_config_that_is_a_device_is_refused(tmp_path: Path) -> None:
    result = _evpay("config", "validate", "/dev/zero")
    assert result.returncode == 2
    assert "not a regular file" in _one_line(result)
