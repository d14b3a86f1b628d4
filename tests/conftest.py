from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.site_rig"]  # the whole-site fixture (start_site) for end-to-end tests

# CI shares two cores with pty and socket tests: judge properties, not per-example wall time.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", help="run the long simulations and campaigns"
    )
    parser.addoption("--sim-seed", type=int, default=None, help="seed for the payment simulation")
    parser.addoption(
        "--sim-random",
        action="store_true",
        help="a random seed for the payment simulation (printed; replay it with --sim-seed)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long run: use --run-slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
