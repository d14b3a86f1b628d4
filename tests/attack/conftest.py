"""Adversarial probes of issue 27's changes (attack-27): the real broker fixture, reused."""

from __future__ import annotations

from tests.firmware_bridge.conftest import broker  # noqa: F401 - the fixture
