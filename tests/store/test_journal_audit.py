"""The journal an auditor can verify: each kind of tampering, done with sqlite3 on the real
database file outside the gateway (triggers dropped, as an attacker with the file would), is
detected and named; signed checkpoints prove the tail; exports verify offline."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.store import JournalEntry, SessionRecord, Step, Store
from gateway.store.audit import Content, checkpoint_message, row_hash
from gateway.store.journal import load_signing_key, new_signing_key, public_key_hex
from tests.helpers import EVPAY, subprocess_env
from tests.site_rig import write_config

ROWS = 10


def _step(n: int) -> Step:
    sid = f"s{n % 3}"  # three sessions interleaved
    return Step(
        key=f"step-{n}",
        sessions=[SessionRecord(sid, "charging", {"n": n})],
        journal=[JournalEntry("session", sid, "MeterValue", {"n": n, "energy_wh": 100 * n})],
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return load_signing_key(new_signing_key(), "test")


@pytest.fixture
def db(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    """10 rows, checkpoints after row 5 and row 10."""
    path = tmp_path / "evpay.sqlite3"
    store = Store.open(path, clock=Clock())
    for n in range(1, ROWS + 1):
        store.apply(_step(n))
        if n in (5, ROWS):
            assert store.sign_journal(key) is not None
    assert store.sign_journal(key) is None  # nothing new: no new checkpoint
    store.close()
    return path


def _report(path: Path, key: Ed25519PrivateKey) -> list[tuple[int | None, str]]:
    store = Store.open(path, read_only=True)
    try:
        report = store.verify_journal(public_key_hex(key))
    finally:
        store.close()
    return [(f.seq, f.kind) for f in report.findings]


def _tamper(path: Path, *sql: str | tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS journal_no_update")
    conn.execute("DROP TRIGGER IF EXISTS journal_no_delete")
    conn.execute("DROP TRIGGER IF EXISTS journal_checkpoints_no_update")
    conn.execute("DROP TRIGGER IF EXISTS journal_checkpoints_no_delete")
    for statement in sql:
        text, args = (statement, ()) if isinstance(statement, str) else statement
        conn.execute(text, args)
    conn.close()


def _row(path: Path, seq: int) -> tuple[str, ...]:
    conn = sqlite3.connect(path)
    found = conn.execute(
        "SELECT step_key, at, entity, entity_id, kind, data, prev_hash, hash FROM journal WHERE seq = ?",
        (seq,),
    ).fetchone()
    conn.close()
    return tuple(found)


def test_an_untouched_journal_is_intact_and_proven_to_its_head(
    db: Path, key: Ed25519PrivateKey
) -> None:
    store = Store.open(db, read_only=True)
    report = store.verify_journal(public_key_hex(key))
    store.close()
    assert report.ok and report.rows == ROWS and report.checkpoints == 2
    assert report.covered_to == ROWS and report.uncovered == 0


def test_an_edited_row_is_named(db: Path, key: Ed25519PrivateKey) -> None:
    _tamper(db, """UPDATE journal SET data = '{"energy_wh":1,"n":3}' WHERE seq = 3""")
    assert _report(db, key) == [(3, "edited")]


def test_an_edited_and_rehashed_row_is_named_and_its_checkpoint_no_longer_fits(
    db: Path, key: Ed25519PrivateKey
) -> None:
    step_key, at, entity, entity_id, kind, _data, prev, _h = _row(db, 3)
    forged = row_hash(prev, Content(step_key, at, entity, entity_id, kind, '{"energy_wh":1,"n":3}'))
    _tamper(
        db,
        ("UPDATE journal SET data = ?, hash = ? WHERE seq = 3", ('{"energy_wh":1,"n":3}', forged)),
    )
    assert _report(db, key) == [(3, "replaced")]


def test_a_deleted_row_is_named(db: Path, key: Ed25519PrivateKey) -> None:
    _tamper(db, "DELETE FROM journal WHERE seq = 4")
    assert _report(db, key) == [(4, "deleted")]


def test_an_inserted_row_is_named(db: Path, key: Ed25519PrivateKey) -> None:
    """A forged row chained properly to row 4, the later rows renumbered to make room."""
    prev = _row(db, 4)[7]
    content = Content(
        "forged", "2026-11-26T08:00:04.500000Z", "session", "s1", "MeterValue", '{"n":99}'
    )
    digest = row_hash(prev, content)
    _tamper(
        db,
        "UPDATE journal SET seq = -seq WHERE seq > 4",
        "UPDATE journal SET seq = 1 - seq WHERE seq < 0",
        (
            "INSERT INTO journal (seq, step_key, at, entity, entity_id, kind, data, prev_hash, hash)"
            " VALUES (5, 'forged', ?, 'session', 's1', 'MeterValue', ?, ?, ?)",
            (content.at, content.data, prev, digest),
        ),
    )
    found = _report(db, key)
    assert found[0] == (5, "inserted")
    # the renumbering also moved the rows the checkpoints signed: named too
    assert {kind for _, kind in found[1:]} <= {"replaced", "truncated"}


def test_reordered_rows_are_named(db: Path, key: Ed25519PrivateKey) -> None:
    _tamper(
        db,
        "UPDATE journal SET seq = -1 WHERE seq = 3",
        "UPDATE journal SET seq = 3 WHERE seq = 4",
        "UPDATE journal SET seq = 4 WHERE seq = -1",
    )
    found = _report(db, key)
    assert found and all(kind == "reordered" for _, kind in found)
    assert {seq for seq, _ in found} <= {3, 4, 5}


def test_a_cut_off_tail_is_named_by_the_signed_checkpoint(db: Path, key: Ed25519PrivateKey) -> None:
    """Rows 8..10 deleted and SQLite's counter reset too: only the checkpoint still knows."""
    _tamper(
        db,
        "DELETE FROM journal WHERE seq >= 8",
        "UPDATE sqlite_sequence SET seq = 7 WHERE name = 'journal'",
    )
    assert _report(db, key) == [(ROWS, "truncated")]


def test_a_cut_off_tail_without_a_checkpoint_is_named_by_the_row_counter(tmp_path: Path) -> None:
    path = tmp_path / "evpay.sqlite3"
    store = Store.open(path)
    for n in range(1, 6):
        store.apply(_step(n))
    store.close()
    _tamper(path, "DELETE FROM journal WHERE seq = 5")
    store = Store.open(path, read_only=True)
    report = store.verify_journal()
    store.close()
    assert [(f.seq, f.kind) for f in report.findings] == [(5, "truncated")]


def test_a_forged_checkpoint_is_named(db: Path, key: Ed25519PrivateKey) -> None:
    """Someone rewrote rows 6..10 and signed the new head with a key of their own."""
    other = Ed25519PrivateKey.generate()
    seq, head, at = 10, _row(db, 10)[7], "2026-11-26T09:00:00.000000Z"
    signature = other.sign(checkpoint_message(seq, head, at)).hex()
    _tamper(
        db,
        (
            "INSERT INTO journal_checkpoints (seq, head_hash, at, public_key, signature) VALUES (?, ?, ?, ?, ?)",
            (seq, head, at, public_key_hex(other), signature),
        ),
    )
    assert _report(db, key) == [(3, "forged_checkpoint")]


def test_an_edited_checkpoint_signature_and_a_deleted_checkpoint_are_named(
    db: Path, key: Ed25519PrivateKey
) -> None:
    _tamper(db, "UPDATE journal_checkpoints SET at = '2026-01-01T00:00:00.000000Z' WHERE id = 1")
    assert _report(db, key) == [(1, "forged_checkpoint")]
    store = Store.open(db, clock=Clock())
    store.apply(_step(11))
    store.sign_journal(key)  # checkpoint 3
    store.close()
    _tamper(db, "DELETE FROM journal_checkpoints WHERE id = 2")
    assert _report(db, key) == [(1, "forged_checkpoint"), (3, "checkpoint_deleted")]


def _evpay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVPAY, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )


@pytest.fixture
def site(tmp_path: Path) -> Callable[[], Path]:
    """A config with a device key file, and a database written through the Store."""
    key_file = tmp_path / "journal.pem"
    config = write_config(tmp_path, extra=f'[journal]\nsigning_key = {{ file = "{key_file}" }}\n')

    def make() -> Path:
        assert _evpay("journal", "keygen", "--out", str(key_file)).returncode == 0
        store = Store.open(tmp_path / "evpay.sqlite3", clock=Clock())
        for n in range(1, ROWS + 1):
            store.apply(_step(n))
        store.close()
        return config

    return make


def test_cli_verify_checkpoint_export_and_offline_verification(
    site: Callable[[], Path], tmp_path: Path
) -> None:
    config = site()
    assert (
        _evpay("journal", "keygen", "--out", str(tmp_path / "journal.pem")).returncode != 0
    )  # never overwrites
    fresh = _evpay("journal", "verify", "--config", str(config))
    assert fresh.returncode == 0 and "10 newest row(s) not yet covered" in fresh.stdout
    # an export of rows no checkpoint covers proves nothing yet, and says what to do
    early = tmp_path / "early.json"
    assert (
        _evpay(
            "journal", "export", "--config", str(config), "--session", "s1", "--out", str(early)
        ).returncode
        == 0
    )
    unproven = _evpay("journal", "verify-export", str(early), "--json")
    assert (
        unproven.returncode == 1
        and json.loads(unproven.stdout)["findings"][0]["kind"] == "unanchored"
    )

    assert _evpay("journal", "checkpoint", "--config", str(config)).returncode == 0
    public = _evpay("journal", "key", "--config", str(config)).stdout.strip()
    export = tmp_path / "s1.json"
    done = _evpay(
        "journal", "export", "--config", str(config), "--session", "s1", "--out", str(export)
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(export.read_text())
    full = [r for r in doc["rows"] if "data" in r]
    assert [r["entity_id"] for r in full] == ["s1"] * 4 and len(
        doc["checkpoints"]
    ) == 1  # rows 1, 4, 7, 10
    assert not any(
        "data" in r for r in doc["rows"] if r["seq"] in (2, 3)
    )  # other sessions: links only
    ok = _evpay("journal", "verify-export", str(export), "--public-key", public, "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["covered_to"] == ROWS

    # the file edited: one reading changed; a link row removed; another key claimed; not an export
    edited = json.loads(export.read_text())
    edited["rows"][3]["data"] = edited["rows"][3]["data"].replace(
        '"energy_wh":400', '"energy_wh":40'
    )
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    bad = _evpay(
        "journal", "verify-export", str(tmp_path / "edited.json"), "--public-key", public, "--json"
    )
    assert bad.returncode == 1 and json.loads(bad.stdout)["findings"][0] == {
        "seq": 4,
        "kind": "edited",
        "text": "row 4: its content does not match its hash (edited)",
    }
    gap = json.loads(export.read_text())
    del gap["rows"][1]
    (tmp_path / "gap.json").write_text(json.dumps(gap))
    missing = _evpay("journal", "verify-export", str(tmp_path / "gap.json"), "--json")
    assert (
        missing.returncode == 1 and json.loads(missing.stdout)["findings"][0]["kind"] == "deleted"
    )
    stranger = Ed25519PrivateKey.generate()
    wrong = _evpay(
        "journal", "verify-export", str(export), "--public-key", public_key_hex(stranger)
    )
    assert wrong.returncode == 1 and "forged_checkpoint" in wrong.stdout
    (tmp_path / "junk.json").write_text('{"format": "something else"}')
    assert _evpay("journal", "verify-export", str(tmp_path / "junk.json")).returncode == 2

    # the database tampered with outside the gateway: verify names the row
    _tamper(tmp_path / "evpay.sqlite3", "DELETE FROM journal WHERE seq = 6")
    tampered = _evpay("journal", "verify", "--config", str(config))
    assert tampered.returncode == 1 and "deleted: row 6 is missing" in tampered.stdout


def test_a_bad_signing_key_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("not a key")
    config = write_config(
        tmp_path, extra=f'[journal]\nsigning_key = {{ file = "{tmp_path / "k.pem"}" }}\n'
    )
    checked = _evpay("config", "validate", str(config))
    assert (
        checked.returncode == 2
        and "journal.signing_key: not an unencrypted PEM private key" in checked.stderr
    )
