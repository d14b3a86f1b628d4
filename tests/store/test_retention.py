"""Retention: old journal rows archived under a signed cut, the rest still verifiable."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import InvariantViolated
from gateway.runtime.app import Daemon
from gateway.settings import load_settings
from gateway.store import InboxMessage, JournalEntry, OutboxMessage, SessionRecord, Step, Store
from gateway.store.export import verify as verify_export
from gateway.store.journal import public_key_hex
from gateway.store.retention import CORRECTION_WINDOW
from tests.helpers import EVPAY, running, subprocess_env
from tests.site_rig import write_config

T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _session(store: Store, clock: Clock, sid: str, final: bool) -> None:
    for k in range(3):
        clock.now += timedelta(minutes=1)
        last = final and k == 2
        store.apply(
            Step(
                f"{sid}:{k}",
                sessions=[
                    SessionRecord(
                        sid, "completed" if last else "charging", {"id": sid, "k": k}, final=last
                    )
                ],
                journal=[JournalEntry("session", sid, "step", {"k": k})],
                outbox=[OutboxMessage(f"{sid}:outcome", f"session:{sid}", "session.outcome", {})]
                if last
                else [],
            )
        )


def _store(tmp_path: Path) -> tuple[Store, Clock]:
    clock = Clock()
    store = Store.open(tmp_path / "r.sqlite3", clock=clock)
    _session(store, clock, "old-1", final=True)
    _session(store, clock, "open", final=False)  # started early, still charging
    _session(store, clock, "old-2", final=True)
    store.outbox.record([])
    for m in store.outbox.list():
        store.outbox.delivered(m.message_id, clock.now)
    clock.now += timedelta(days=100)
    _session(store, clock, "new", final=True)
    return store, clock


def test_a_cut_archives_the_oldest_rows_and_the_rest_still_verifies(tmp_path: Path) -> None:
    store, clock = _store(tmp_path)
    key = Ed25519PrivateKey.generate()
    done = store.prune(key, cutoff=clock.now - timedelta(days=90), archive_dir=tmp_path / "archive")
    # old-1's rows go; the open session's first row is where the cut stops (old-2 waits behind it)
    assert done.cut_seq == 3 and done.journal_rows == 3 and done.archive is not None
    assert [j["entity_id"] for j in store.journal()][:1] == ["open"]
    report = store.verify_journal(public_key_hex(key))
    assert report.ok, report.findings
    archived = verify_export(done.archive.read_bytes(), public_key_hex(key))
    assert archived.ok and archived.rows == 3
    assert (
        store.prune(
            key, cutoff=clock.now - timedelta(days=90), archive_dir=tmp_path / "archive"
        ).cut_seq
        is None
    )
    assert {m.message_id for m in store.outbox.list()} == {
        "new:outcome"
    }  # old delivered messages went
    store.close()


def test_rows_removed_without_a_signed_cut_are_found(tmp_path: Path) -> None:
    store, clock = _store(tmp_path)
    key = Ed25519PrivateKey.generate()
    store.prune(key, cutoff=clock.now - timedelta(days=90), archive_dir=tmp_path / "archive")
    store.close()
    conn = sqlite3.connect(tmp_path / "r.sqlite3")
    conn.execute("DROP TRIGGER journal_no_delete")
    conn.execute("DROP TRIGGER journal_cuts_no_delete")
    conn.execute("DELETE FROM journal WHERE seq = 4")  # beyond the cut: a plain deletion
    conn.commit()
    conn.close()
    store = Store.open(tmp_path / "r.sqlite3", read_only=True)
    kinds = {f.kind for f in store.verify_journal(public_key_hex(key)).findings}
    assert "deleted" in kinds
    store.close()
    conn = sqlite3.connect(tmp_path / "r.sqlite3")  # a cut made without the device key
    other = Ed25519PrivateKey.generate()
    conn.execute(
        "INSERT INTO journal_cuts (seq, head_hash, archive, archive_sha256, at, public_key, signature)"
        " VALUES (4, ?, 'x', ?, 'now', ?, ?)",
        ("0" * 64, "0" * 64, public_key_hex(other), "00" * 64),
    )
    conn.commit()
    conn.close()
    store = Store.open(tmp_path / "r.sqlite3", read_only=True)
    assert "forged_cut" in {f.kind for f in store.verify_journal(public_key_hex(key)).findings}
    store.close()


def test_no_cut_over_a_journal_that_does_not_verify(tmp_path: Path) -> None:
    store, clock = _store(tmp_path)
    store.close()
    conn = sqlite3.connect(tmp_path / "r.sqlite3")
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("UPDATE journal SET data = '{\"k\":9}' WHERE seq = 2")
    conn.commit()
    conn.close()
    store = Store.open(tmp_path / "r.sqlite3", clock=clock)
    with pytest.raises(InvariantViolated, match="does not verify"):
        store.prune(
            Ed25519PrivateKey.generate(), cutoff=clock.now, archive_dir=tmp_path / "archive"
        )
    assert store.journal()[0]["seq"] == 1  # nothing removed
    store.close()


def test_the_journal_refuses_deleting_rows_beyond_the_newest_cut(tmp_path: Path) -> None:
    store, _clock = _store(tmp_path)
    store.close()
    conn = sqlite3.connect(tmp_path / "r.sqlite3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM journal WHERE seq = 1")
    conn.close()


def _retention_site(
    tmp_path: Path, journal: str = "", port: int | None = None
) -> tuple[Ed25519PrivateKey, Path]:
    """The device key and a site config with that key on file and 30 days of retention."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "journal.pem").write_bytes(pem)
    extra = (
        f'[journal]\nsigning_key = {{ file = "{tmp_path / "journal.pem"}" }}\nretention_days = 30\n'
    )
    return key, write_config(tmp_path, port=port, extra=extra + journal)


def test_evpay_store_prune_and_stats(tmp_path: Path) -> None:
    key, config = _retention_site(tmp_path)
    clock = Clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    _session(store, clock, "old", final=True)
    clock.now = datetime.now(UTC)
    _session(store, clock, "recent", final=True)
    store.close()
    run = subprocess.run(
        [*EVPAY, "store", "prune", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    cuts = json.loads(run.stdout)["cuts"]
    assert [c["to_row"] for c in cuts] == [3]
    assert Path(cuts[0]["archive"]).parent == tmp_path / "journal-archive"
    check = subprocess.run(
        [
            *EVPAY,
            "journal",
            "verify-export",
            cuts[0]["archive"],
            "--public-key",
            public_key_hex(key),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    stats = subprocess.run(
        [*EVPAY, "store", "stats", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=True,
    )
    assert "journal row 4 at" in stats.stdout


def test_archived_sessions_are_compacted_after_their_full_rows_are_archived(tmp_path: Path) -> None:
    from gateway.payments.record import compact

    clock = Clock()
    store = Store.open(tmp_path / "c.sqlite3", clock=clock)
    full = {
        "id": "paid",
        "readings": [["2026-01-05T08:00:00+00:00", 0, True]],
        "notes": [],
        "price_minor": 500,
    }
    for sid, owed in (("paid", 0), ("owing", 700)):
        store.apply(
            Step(
                f"{sid}:1",
                sessions=[
                    SessionRecord(
                        sid, "completed", {**full, "id": sid}, final=True, owed_minor=owed
                    )
                ],
                journal=[JournalEntry("session", sid, "step", {})],
            )
        )
    clock.now += timedelta(days=100)
    _session(store, clock, "new", final=True)
    before = store.session("paid")
    key = Ed25519PrivateKey.generate()
    done = store.prune(
        key, cutoff=clock.now - timedelta(days=90), archive_dir=tmp_path / "a", compact=compact
    )
    assert done.cut_seq == 2 and done.sessions_compacted == 1
    after = store.session("paid")
    assert after is not None and before is not None
    assert (
        after["data"] == {"id": "paid", "price_minor": 500}
        and after["updated_at"] == before["updated_at"]
    )
    owing = store.session("owing")
    assert owing is not None and "readings" in owing["data"]  # a debt keeps its whole record
    archived = [
        json.loads(line)
        for f in (tmp_path / "a").glob("sessions-*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert [(a["id"], a["data"]) for a in archived] == [("paid", full)]
    assert not store.prune(
        key, cutoff=clock.now - timedelta(days=90), archive_dir=tmp_path / "a", compact=compact
    ).anything
    store.close()


async def test_the_daemon_archives_by_the_configured_days_into_the_configured_folder(
    tmp_path: Path,
) -> None:
    """The daemon gives the store the two values it needs (``retention_days``, ``archive_dir``)
    and cuts at start, then hourly."""
    key, config = _retention_site(tmp_path, f'archive_dir = "{tmp_path / "kept"}"\n', port=0)
    clock = Clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    _session(store, clock, "old", final=True)
    clock.now = datetime.now(UTC) - timedelta(days=29)  # inside the 30 days: stays
    _session(store, clock, "recent", final=True)
    store.close()
    kept = tmp_path / "kept"
    async with running(Daemon(load_settings(config))):
        async with asyncio.timeout(20):
            while not kept.is_dir() or not list(kept.glob("journal-*")):
                await asyncio.sleep(0.05)
    (archive,) = kept.glob("journal-*")
    archived = verify_export(archive.read_bytes(), public_key_hex(key))
    assert archived.ok and archived.rows == 3  # the old session's three rows; the recent stay
    assert not (tmp_path / "journal-archive").exists()  # the configured folder, not the default


def test_a_sessions_first_cdr_is_kept_while_a_correction_may_come(tmp_path: Path) -> None:
    """Issue 26: the first CDR tells a corrected CDR from a first bill (the oldest one stored).
    Retention used to delete it with every processed message past the cutoff, so a correction
    after the retention period billed the session again instead of correcting it."""
    clock = Clock()
    store = Store.open(tmp_path / "r.sqlite3", clock=clock)

    def cdr(cdr_id: str, reference: str) -> None:
        clock.now += timedelta(minutes=1)
        payload = {"id": cdr_id, "authorization_reference": reference}
        message = InboxMessage(cdr_id, "cpo", "cdr", payload)
        store.apply(Step(f"inbox:{cdr_id}", inbox=[message], inbox_processed=[cdr_id]))

    cdr("cdr-1", "EVP-s1")
    cdr("cdr-1-corrected", "EVP-s1")
    cdr("cdr-2", "EVP-s2")
    push = InboxMessage("push-1", "cpo", "session", {"id": "x"})
    store.apply(Step("inbox:push-1", inbox=[push], inbox_processed=["push-1"]))
    key = Ed25519PrivateKey.generate()
    try:
        clock.now += timedelta(days=100)
        store.prune(key, cutoff=clock.now - timedelta(days=90), archive_dir=tmp_path / "a")
        kept = sorted(m["message_id"] for m in store.inbox("cdr"))
        assert kept == ["cdr-1", "cdr-2"] and store.inbox("session") == []
        first = store.first_inbox("cdr", "authorization_reference", "EVP-s1")
        assert first is not None and first["payload"]["id"] == "cdr-1"
        clock.now += CORRECTION_WINDOW  # past the window: a correction could not be refunded
        store.prune(key, cutoff=clock.now - timedelta(days=90), archive_dir=tmp_path / "a")
        assert store.inbox("cdr") == []
    finally:
        store.close()
