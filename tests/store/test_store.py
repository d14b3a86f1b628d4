from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InvariantViolated, SchemaTooNew, StoreCorrupt, StoreFull, StoreReadOnly
from gateway.store import (
    InboxMessage,
    JournalEntry,
    OutboxMessage,
    PaymentRecord,
    SessionRecord,
    Step,
    Store,
)
from gateway.store.db import latest_version, migrations, quick_check_path
from gateway.store.journal import append, dumps, find_card_data, may_hold_card_data


def _step(n: int) -> Step:
    sid = f"s{n}"
    return Step(
        key=f"step-{n}",
        sessions=[SessionRecord(sid, "authorized", {"n": n})],
        payments=[
            PaymentRecord(
                f"p{n}", sid, "preauth", "approved", 5000, "EUR", {"masked_pan": "541333******0074"}
            )
        ],
        journal=[JournalEntry("session", sid, "preauth.approved", {"n": n})],
        outbox=[OutboxMessage(f"m{n}", f"fac:{sid}", "fac.post", {"n": n})],
    )


def test_migrates_from_empty_to_latest(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "e.sqlite3")
    assert store.schema_version == latest_version() == len(migrations()) >= 2
    tables = {
        r[0]
        for r in sqlite3.connect(tmp_path / "e.sqlite3").execute("SELECT name FROM sqlite_master")
    }
    assert {
        "sessions",
        "payments",
        "journal",
        "outbox",
        "inbox",
        "legacy_steps",
        "terminals",
    } <= tables
    assert "steps" not in tables  # since 0008 the journal holds the step keys
    store.close()


def test_migrates_from_the_previous_version_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    version, _name, sql = migrations()[0]
    conn.executescript(sql)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute(
        "INSERT INTO sessions VALUES ('old', 'charging', 0, '{}', '2026-01-01T00:00:00.000000Z',"
        " '2026-01-01T00:00:00.000000Z')"
    )
    conn.close()
    store = Store.open(path)
    assert store.schema_version == latest_version()
    old = store.session("old")
    assert old is not None and old["state"] == "charging"
    assert store.terminals() == []  # table from 0002 exists
    store.close()


def _version_7_database(path: Path, cut_tail: bool) -> None:
    """A database as 0007 left it: three chained journal rows under steps rows, and a step that
    wrote no journal entry (an inbox message); with ``cut_tail`` the last row deleted by hand."""
    conn = sqlite3.connect(path, isolation_level=None)
    for version, _name, sql in migrations()[:7]:
        conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {version}")
    for n in (1, 2, 3):
        conn.execute("INSERT INTO steps VALUES (?, '2026-01-01T00:00:00.000000Z')", (f"step-{n}",))
        append(
            conn,
            f"step-{n}",
            "2026-01-01T00:00:00.000000Z",
            [JournalEntry("session", "s1", "x", {"n": n})],
        )
    conn.execute("INSERT INTO steps VALUES ('inbox:abc', '2026-01-01T00:00:00.000000Z')")
    conn.execute(
        "INSERT INTO inbox (message_id, source, kind, payload, received_at)"
        " VALUES ('abc', 'cpo', 'refund', '{}', '2026-01-01T00:00:00.000000Z')"
    )
    if cut_tail:
        conn.execute("DROP TRIGGER journal_no_delete")
        conn.execute("DELETE FROM journal WHERE seq = 3")
    conn.close()


@pytest.mark.parametrize("cut_tail", [False, True])
def test_0008_moves_step_keys_into_the_journal_keeping_chain_and_counter(
    tmp_path: Path, cut_tail: bool
) -> None:
    path = tmp_path / "v7.sqlite3"
    _version_7_database(path, cut_tail)
    store = Store.open(path)
    assert store.schema_version == latest_version()
    assert store.step_applied("step-1") and store.step_applied("inbox:abc")
    assert store.apply(Step("inbox:abc", inbox=[InboxMessage("abc", "cpo", "refund", {})])) is False
    assert (
        store.apply(Step("step-2", journal=[JournalEntry("session", "s1", "x", {"n": 2})])) is False
    )
    report = store.verify_journal()
    if cut_tail:  # SQLite's counter still says three rows were written
        assert [f.kind for f in report.findings] == ["truncated"]
    else:
        assert report.ok and report.rows == 3
        assert store.apply(Step("step-4", journal=[JournalEntry("session", "s1", "x", {"n": 4})]))
        assert store.verify_journal().ok and store.verify_journal().rows == 4
    store.close()


def test_refuses_a_database_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {latest_version() + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match="upgrade evpay"):
        Store.open(path)
    with pytest.raises(SchemaTooNew):
        Store.open(path, read_only=True)


def test_a_step_is_written_whole_and_only_once(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    assert store.apply(_step(1)) is True
    assert store.apply(_step(1)) is False  # same key: a no-op, nothing doubled
    assert len(store.payments("s1")) == 1
    assert [j["kind"] for j in store.journal("s1")] == ["preauth.approved"]
    assert store.outbox.backlog().pending == 1
    store.close()


def test_a_failing_step_leaves_nothing_behind(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    store.apply(_step(1))
    clash = Step(
        key="step-x",
        sessions=[SessionRecord("s9", "new", {})],
        journal=[JournalEntry("session", "s9", "created")],
        outbox=[OutboxMessage("m1", "fac:s9", "fac.post", {})],  # message id m1 already exists
    )
    with pytest.raises(Exception, match="UNIQUE"):
        store.apply(clash)
    assert store.session("s9") is None
    assert store.journal("s9") == []
    assert not store.step_applied("step-x")
    store.close()


def test_card_data_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    bad = Step(
        "k",
        payments=[
            PaymentRecord(
                "p", "s", "preauth", "ok", 1, "EUR", {"card": {"pan": "5413330089020074"}}
            )
        ],
    )
    with pytest.raises(InvariantViolated, match=r"card\.pan"):
        store.apply(bad)
    assert not store.step_applied("k")
    store.close()


def test_journal_is_append_only_and_tampering_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    store = Store.open(path)
    for n in range(5):
        store.apply(_step(n))
    assert store.verify_journal().ok
    assert store.verify_journal().rows == 5
    store.close()
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE journal SET data = '{}' WHERE seq = 3")
    conn.execute("DROP TRIGGER journal_no_update")  # an attacker with file access
    conn.execute("""UPDATE journal SET data = '{"n":99}' WHERE seq = 3""")
    conn.commit()
    conn.close()
    store = Store.open(path)
    assert [(f.seq, f.kind) for f in store.verify_journal().findings] == [(3, "edited")]
    store.close()


def test_outbox_is_ordered_per_object_and_dead_letters_unblock(tmp_path: Path) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    store = Store.open(tmp_path / "o.sqlite3", clock=lambda: t0)
    store.apply(
        Step("a", outbox=[OutboxMessage("a1", "A", "k", {}), OutboxMessage("a2", "A", "k", {})])
    )
    store.apply(Step("b", outbox=[OutboxMessage("b1", "B", "k", {})]))
    assert [m.message_id for m in store.outbox.due(t0)] == ["a1", "b1"]
    store.outbox.retry_later("a1", "HTTP 503", t0 + timedelta(seconds=30))
    assert [m.message_id for m in store.outbox.due(t0)] == ["b1"]  # a2 never overtakes a1
    store.outbox.dead_letter("a1", "OCPI 2001 invalid", t0)
    store.outbox.delivered("b1", t0)
    assert [m.message_id for m in store.outbox.due(t0)] == ["a2"]
    a1 = store.outbox.get("a1")
    assert a1 is not None and a1.last_error == "OCPI 2001 invalid"
    backlog = store.outbox.backlog()
    assert (backlog.pending, backlog.dead, backlog.oldest_pending) == (1, 1, t0)
    assert store.outbox.requeue("a1", t0) is True
    assert store.outbox.backlog().dead == 0
    store.close()


def test_disk_full_is_a_clear_error_and_loses_no_committed_step(tmp_path: Path) -> None:
    path = tmp_path / "full.sqlite3"
    store = Store.open(path)
    store.apply(_step(0))
    store._conn.execute(
        "PRAGMA max_page_count = " + str(store._conn.execute("PRAGMA page_count").fetchone()[0])
    )
    big = Step("big", journal=[JournalEntry("session", "s0", "x", {"blob": "x" * 200_000})])
    with pytest.raises(StoreFull, match="disk holding the database is full"):
        store.apply(big)
    assert not store.step_applied("big")
    assert store.step_applied("step-0")
    store.close()


def test_read_only_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite3"
    Store.open(path).close()
    store = Store.open(path, read_only=True)
    with pytest.raises(StoreReadOnly, match="read-only"):
        store.apply(_step(1))
    store.close()


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database, it is a text file" * 100)
    with pytest.raises(StoreCorrupt, match="restore the latest backup"):
        Store.open(path)


def test_damaged_pages_are_detected_by_the_check(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    store = Store.open(path)
    for n in range(200):
        store.apply(_step(n))
    store.checkpoint()
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), page):
        data[offset : offset + 64] = b"\xff" * 64
    shutil.copy(path, tmp_path / "backup")
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt):
        Store.open(path, check=True)  # what the daemon asks for after an unclean stop
    with pytest.raises(StoreCorrupt):
        quick_check_path(path)  # what it runs after READY, and `evpay store check`


_KEYS = st.sampled_from(
    ["pan", "PAN", "Pin", "cvc", "masked_pan", "pan_hint", "amount", "x", 'a"pan":', ',"pan":']
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=',{}":pan\\ ', max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(_KEYS, _JSON, max_size=4))
def test_the_fast_card_data_check_agrees_with_the_walk(data: dict[str, object]) -> None:
    """The store checks each record's text with one regex and walks it only on a hit: the regex
    must never miss a forbidden key the walk finds (nor see one in a string value)."""
    assert may_hold_card_data(dumps(data)) == (find_card_data(data) is not None)
