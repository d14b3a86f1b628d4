"""Adversarial probes of issue 27's changes (attack-27): the suite's own rigs, reused (a real
mosquitto set up as a site's is, the local API's abuse site, the OCPI server)."""

from __future__ import annotations

from tests.firmware_bridge.conftest import broker  # noqa: F401 - the fixture
from tests.ocpi.test_ptp_server import server  # noqa: F401 - the fixture
from tests.runtime.test_api_abuse import site  # noqa: F401 - the fixture
