"""Energy no open session takes is logged, never dropped in silence (issue 27): a meter value or
a stop for an unknown session, or for one that has ended."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.payments import events as e
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.ocpi.test_ptp_server import finished_session
from tests.payments.fixtures import Clock, policy


def test_energy_for_an_unknown_or_ended_session_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "e.sqlite3", clock=clock)
    host = EngineHost(store, policy(), clock)
    finished_session(host, clock, "done")
    caplog.set_level(logging.WARNING, logger="gateway.runtime.engine_host")
    for event in (
        e.MeterValue("nobody", "m1", 1_000_000_000),
        e.MeterValue("done", "m9", 9_000),
        e.ChargerStopped(session_id="done", event_id="late-stop", meter_wh=9_500),
    ):
        assert not host.handle(event).applied
    seen = [(r.__dict__["session"], r.__dict__["why"]) for r in caplog.records]
    assert ("nobody", "no such session") in seen
    assert sum(1 for s, why in seen if s == "done" and why.startswith("session is ")) == 2
    store.close()
