"""Rows stored by earlier versions still load, with the same money: a real schema-0009 file
(``tests/data/store/README.md`` says how it was made) opened, migrated to 0010 and read by
today's code; and meter readings are appended one row each, never rewritten."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.base import Outcome
from gateway.payments import events as e
from gateway.payments.model import Session
from gateway.payments.record import from_json
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from gateway.store.db import latest_version
from tests.payments.fixtures import policy

DATA = Path(__file__).parent.parent / "data" / "store"
FIELDS = (
    "authorized_minor",
    "captured_minor",
    "released_minor",
    "open_minor",
    "refunded_minor",
    "receipt_no",
    "currency",
    "hold_minor",
)
BILL = ("owed_minor", "shortfall_minor", "unpaid_minor", "unpaid_energy_wh", "price_minor")


def _money(s: Session) -> dict[str, Any]:
    """What the code of 0009 read from each row (``v0009-sessions.expected.json``), read now."""
    return {
        **{f: getattr(s, f) for f in FIELDS},
        **{f: getattr(s.bill, f) for f in BILL},
        "price_excl": s.bill.price_excl,
        "billed_energy_wh": s.metering.billed_energy_wh,
        "state": s.state.value,
        "holds": [
            [
                h.receipt_no,
                h.amount_minor,
                h.target_minor,
                h.captured_minor,
                h.released_minor,
                *rest,
            ]
            for h in s.holds
            for rest in [(h.status.value, h.booking_receipt)]
        ],
        "readings": [[r.at.isoformat(), r.energy_wh, r.trusted] for r in s.metering.readings],
    }


def _old_store(tmp_path: Path, clock: list[datetime]) -> Store:
    path = tmp_path / "old.sqlite3"
    shutil.copy(DATA / "v0009-sessions.sqlite3", path)
    return Store.open(path, clock=lambda: clock[0])


def test_every_session_of_a_0009_store_loads_with_the_same_money(tmp_path: Path) -> None:
    expected = json.loads((DATA / "v0009-sessions.expected.json").read_text())
    store = _old_store(tmp_path, [datetime(2026, 8, 1, tzinfo=UTC)])
    assert store.schema_version == latest_version() >= 10
    rows = store.sessions(limit=1000)
    assert len(rows) == len(expected) == 48
    loaded = {r["id"]: _money(from_json(r["data"])) for r in rows}
    assert loaded == expected
    states = {v["state"] for v in expected.values()}
    assert {"charging", "authorized", "capture_unknown", "completed", "voided"} <= states
    assert sum(bool(v["readings"]) for v in expected.values()) >= 10


def test_an_old_open_session_goes_on_and_its_readings_move_to_their_table(tmp_path: Path) -> None:
    clock = [datetime(2026, 1, 5, 18, 30, tzinfo=UTC)]
    store = _old_store(tmp_path, clock)
    host = EngineHost(
        store, policy("incremental", topup_terminals=frozenset({"T1"})), lambda: clock[0]
    )
    before = host.load("open-charging")
    assert before is not None and len(before.metering.readings) == 7
    assert store.stats()["rows"]["meter_readings"] == 0  # 0009 kept them inside the row
    meter = 100_000 + 9_500
    for n in range(3):
        clock[0] += timedelta(seconds=30)
        meter += 500
        host.handle(e.MeterValue("open-charging", f"new-{n}", meter))
    row = store.session("open-charging")
    assert row is not None and store.stats()["rows"]["meter_readings"] == 10
    after = from_json(row["data"])
    assert after.metering.readings[:7] == before.metering.readings
    assert [r.energy_wh for r in after.metering.readings[7:]] == [10_000, 10_500, 11_000]
    assert after.bill.price_minor > before.bill.price_minor
    # the row itself no longer carries them: a new reading adds one row, it rewrites none
    reopened = Store.open(tmp_path / "old.sqlite3", clock=lambda: clock[0])
    assert reopened.stats()["rows"]["meter_readings"] == 10
    again = reopened.session("open-charging")
    assert again is not None and from_json(again["data"]) == after


def test_a_meter_value_adds_one_reading_row(tmp_path: Path) -> None:
    clock = [datetime(2026, 1, 5, 8, tzinfo=UTC)]
    store = Store.open(tmp_path / "new.sqlite3", clock=lambda: clock[0])
    host = EngineHost(store, policy(), lambda: clock[0])
    sid = "s1"
    host.handle(e.CardPresented(sid, "card", "E1", "T1", "EUR"))
    approved = e.TerminalResultArrived(
        session_id=sid,
        event_id="pre",
        operation=e.Operation.PREAUTHORIZE,
        outcome=Outcome.APPROVED,
        amount_minor=5000,
        receipt_no=3,
    )
    host.handle(approved)
    host.handle(e.ChargerStarted(sid, "start", 0))
    counts = []
    for n in range(4):
        clock[0] += timedelta(minutes=1)
        host.handle(e.MeterValue(sid, f"m{n}", 1000 * (n + 1)))
        counts.append(store.stats()["rows"]["meter_readings"])
    assert counts == [2, 3, 4, 5]
    row = store.session(sid)
    assert row is not None and len(row["data"]["readings"]) == 5
    loaded = from_json(row["data"])
    assert [r.energy_wh for r in loaded.metering.readings] == [0, 1000, 2000, 3000, 4000]
