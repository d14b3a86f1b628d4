"""The simulator rig (pty and loopback TCP) of tests/zvt, for the attack tests."""

from tests.zvt.conftest import rig  # noqa: F401 - the fixture, re-exported
