"""The holds a terminal's sweep must leave alone because a debt stands on them, read by the
store in SQL (``Store.owing_hold_refs``) on a real SQLite file: the holds of the sessions on
that terminal that owe money and whose validity has not ended, and no others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.payments.model import Hold, HoldStatus, Session, update
from gateway.payments.record import to_json
from gateway.payments.states import State
from gateway.store import SessionRecord, Step, Store

NOW = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)


def _row(sid: str, terminal: str, owed: int, valid_h: float, *refs: str) -> SessionRecord:
    holds = tuple(Hold(r, 1000, status=HoldStatus.UNCONFIRMED) for r in refs)
    s = Session(sid, "E1", terminal, "EUR", State.CAPTURE_UNCONFIRMED, NOW, holds=holds)
    s = update(s, expires_at=NOW + timedelta(hours=valid_h), owed_minor=owed)
    return SessionRecord(sid, s.state.value, to_json(s), True, owed, terminal)


def test_only_the_valid_holds_of_owing_sessions_on_the_terminal(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        rows = [
            _row("a", "T1", 500, 24, "7", "8"),  # owes, valid: both holds
            _row("b", "T1", 500, -1, "9"),  # owes, lapsed
            _row("c", "T2", 500, 24, "10"),  # another terminal
            _row("d", "T1", 0, 24, "11"),  # owes nothing
            _row("e", "T1", 300, 0.0001, "12"),  # valid for a moment more
        ]
        store.apply(Step("seed", sessions=rows))
        assert sorted(store.owing_hold_refs("T1", NOW)) == ["12", "7", "8"]
        assert sorted(store.owing_hold_refs("T1", NOW + timedelta(hours=1))) == ["7", "8"]
        assert store.owing_hold_refs("T3", NOW) == []
    finally:
        store.close()


def test_past_its_bound_the_newest_debts_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        for n in range(5):  # one step each: each session stored after the one before
            store.apply(Step(f"seed-{n}", sessions=[_row(f"s{n}", "T1", 100, 24, str(n))]))
        monkeypatch.setattr(store, "owing_refs_limit", 3)
        assert store.owing_hold_refs("T1", NOW) == ["4", "3", "2"]
    finally:
        store.close()
