"""The repository's promises about itself: packaging, README commands, CI, lint, types."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO


def _readme_command(marker: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```sh\n(.+?)\n```", text, re.DOTALL)
    assert match, f"README has no {marker} block"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1].strip() == _readme_command("test-command")


def test_readme_run_command_runs_the_demo() -> None:
    assert _readme_command("run-command").endswith("evpay demo")


def test_import_packages_belong_to_this_distribution_only() -> None:
    """No other installed distribution ships a top-level gateway/drivers/firmware_bridge
    (an editable install records none for us; a wheel install records evpay-edge)."""
    owners = importlib.metadata.packages_distributions()
    for package in ("gateway", "drivers", "firmware_bridge"):
        assert set(owners.get(package, [])) <= {"evpay-edge"}, (package, owners.get(package))
        module = __import__(package)
        assert module.__file__ is not None and module.__file__.startswith(str(REPO)), (
            module.__file__
        )
    assert "evpay-edge" not in owners.get("config", [])


def test_embedded_demo_config_is_the_shipped_one() -> None:
    assert (REPO / "gateway/demo/demo.toml").read_bytes() == (
        REPO / "config/demo.toml"
    ).read_bytes()


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    """One formatter at 100 columns, no skip markers: hand-packed lines hide how long code is."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    skips = [
        str(path)
        for package in ("gateway", "drivers", "firmware_bridge", "hil", "tests", "bench")
        for path in (REPO / package).rglob("*.py")
        if "fmt: " + "skip" in path.read_text(encoding="utf-8")
    ]
    assert skips == []


@pytest.mark.timeout(600)
def test_mypy_strict_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
