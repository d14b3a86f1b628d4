"""Adversarial probes (attack-27: issue 27's site security; attack-30: issue 30's field truth),
written by sessions that did not write the changes. They reuse the suite's own rigs: a real
mosquitto set up as a site's is, the local API's abuse site, the OCPI server, and the ZVT
simulator on a pty and loopback TCP."""

from __future__ import annotations

from tests.firmware_bridge.conftest import broker  # noqa: F401 - the fixture
from tests.ocpi.test_ptp_server import server  # noqa: F401 - the fixture
from tests.runtime.test_api_abuse import site  # noqa: F401 - the fixture
from tests.zvt.conftest import rig  # noqa: F401 - the fixture, re-exported
