"""Rows stored by earlier versions still load, with the same money: real schema-0009 and
schema-0012 files (``tests/data/store/README.md`` says how they were made) opened, migrated
to today's schema and read by today's code, their integer receipt numbers now text references
(0013); and meter readings are appended one row each, never rewritten."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
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
    "currency",
    "hold_minor",
)
BILL = ("owed_minor", "shortfall_minor", "unpaid_minor", "unpaid_energy_wh", "price_minor")


def _money(s: Session) -> dict[str, Any]:
    """What the code of 0009 read from each row (``v0009-sessions.expected.json``), read now."""
    return {
        **{f: getattr(s, f) for f in FIELDS},
        "receipt_no": s.ref,
        **{f: getattr(s.bill, f) for f in BILL},
        "price_excl": s.bill.price_excl,
        "billed_energy_wh": s.metering.billed_energy_wh,
        "state": s.state.value,
        "holds": [
            [
                h.ref,
                h.amount_minor,
                h.target_minor,
                h.captured_minor,
                h.released_minor,
                *rest,
            ]
            for h in s.holds
            for rest in [(h.status.value, h.booking_ref)]
        ],
        "readings": [[r.at.isoformat(), r.energy_wh, r.trusted] for r in s.metering.readings],
    }


def _old_store(tmp_path: Path, clock: list[datetime], name: str = "v0009") -> Store:
    path = tmp_path / "old.sqlite3"
    shutil.copy(DATA / f"{name}-sessions.sqlite3", path)
    return Store.open(path, clock=lambda: clock[0])


def _text(n: int | None) -> str | None:
    """An old integer receipt number as the reference 0013 makes of it."""
    return None if n is None else str(n)


def _as_text_refs(row: dict[str, Any]) -> dict[str, Any]:
    """What the old code read, its receipt numbers as the text references read now: the money
    fields stay exactly as they were."""
    holds = [[_text(h[0]), *h[1:6], _text(h[6])] for h in row["holds"]]
    out = {**row, "receipt_no": _text(row["receipt_no"]), "holds": holds}
    if "refunds" in row:
        out["refunds"] = [[*r[:3], _text(r[3])] for r in row["refunds"]]
    return out


def test_every_session_of_a_0009_store_loads_with_the_same_money(tmp_path: Path) -> None:
    expected = json.loads((DATA / "v0009-sessions.expected.json").read_text())
    store = _old_store(tmp_path, [datetime(2026, 8, 1, tzinfo=UTC)])
    assert store.schema_version == latest_version() >= 13
    rows = store.sessions(limit=1000)
    assert len(rows) == len(expected) == 48
    loaded = {r["id"]: _money(from_json(r["data"])) for r in rows}
    assert loaded == {sid: _as_text_refs(row) for sid, row in expected.items()}
    refs = [h[0] for row in loaded.values() for h in row["holds"]]
    assert refs and all(isinstance(r, str) and r == str(int(r)) for r in refs)
    # the rows themselves were rewritten by 0013: no integer receipt number is left in them
    assert not any("receipt_no" in str(r["data"]) for r in rows)
    assert store.verify_journal().ok  # the journal's old entries were not touched
    states = {v["state"] for v in expected.values()}
    assert {"charging", "authorized", "capture_unknown", "completed", "voided"} <= states
    assert sum(bool(v["readings"]) for v in expected.values()) >= 10


def test_every_session_of_a_0012_store_loads_with_the_same_money_and_text_refs(
    tmp_path: Path,
) -> None:
    """The 0012 file has refunds (done by reversal, done by refund, failed, unknown), sessions
    with two holds, open sessions and two end-of-day batches."""
    expected = json.loads((DATA / "v0012-sessions.expected.json").read_text())
    store = _old_store(tmp_path, [datetime(2026, 8, 1, tzinfo=UTC)], "v0012")
    assert store.schema_version == latest_version() >= 13
    rows = store.sessions(limit=1000)
    sessions = expected["sessions"]
    assert len(rows) == len(sessions) == 47
    loaded = {}
    for r in rows:
        s = from_json(r["data"])
        row = {
            **{f: getattr(s, f) for f in FIELDS},
            **{f: getattr(s.bill, f) for f in BILL},
            "state": s.state.value,
            "receipt_no": s.ref,
            "holds": _money(s)["holds"],
            "refunds": [[f.id, f.amount_minor, f.status.value, f.ref] for f in s.refunds],
        }
        loaded[r["id"]] = row
    assert loaded == {sid: _as_text_refs(row) for sid, row in sessions.items()}
    assert any(len(v["holds"]) > 1 for v in loaded.values())
    refunds = [f for v in loaded.values() for f in v["refunds"]]
    assert {f[2] for f in refunds} == {"done", "failed", "unknown"}
    assert sorted(f[3] for f in refunds if f[3] is not None) == ["7002", "7101"]
    # the end-of-day batches: the receipt range as text, the totals per card group and currency
    batches = store.end_of_day_batches(datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))
    old = expected["end_of_day"]
    assert len(batches) == len(old) == 2
    for b, (terminal, cur, total, first, last, totals) in zip(batches, old, strict=True):
        assert (b["terminal"], b["currency"], b["total_minor"]) == (terminal, cur, total)
        assert b["batch_range"] == (str(first), str(last))
        assert b["totals"] == [{**t, "currency": cur} for t in json.loads(totals)]
    assert store.verify_journal().ok
    states = {v["state"] for v in sessions.values()}
    assert {"charging", "authorized", "capture_unknown", "completed", "voided"} <= states


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
        ref="3",
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


def test_the_reader_takes_rows_in_the_old_integer_shape_as_they_were_written() -> None:
    """A row a version before 0013 wrote (read here straight from the 0012 file, unmigrated)
    loads with text references and the same money: the reader does not depend on the
    migration having run."""
    expected = json.loads((DATA / "v0012-sessions.expected.json").read_text())["sessions"]
    uri = f"file:{DATA / 'v0012-sessions.sqlite3'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        rows = conn.execute("SELECT id, data FROM sessions").fetchall()
    assert len(rows) == len(expected)
    old_shape = 0
    for sid, data in rows:
        raw = json.loads(data)
        old_shape += any(isinstance(h.get("receipt_no"), int) for h in raw.get("holds", ()))
        s = from_json(raw)
        want = _as_text_refs(expected[sid])
        assert s.ref == want["receipt_no"]
        assert [(h.ref, h.booking_ref, h.amount_minor, h.captured_minor) for h in s.holds] == [
            (h[0], h[6], h[1], h[3]) for h in want["holds"]
        ]
        assert [f.ref for f in s.refunds] == [f[3] for f in want["refunds"]]
    assert old_shape > 30
