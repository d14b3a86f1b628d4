"""Issue 26: ``evpay sessions refund-resolve`` (the CLI as a subprocess, a real SQLite store)
refuses to settle a refund still ``sent`` until ``REFUND_RESOLVE_MIN_AGE`` has passed since it
was sent — its answer may still come — and says how long to wait; an older one, or one already
``unknown``, is settled as before."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.base import Outcome
from gateway.cli.sessions_refund import REFUND_RESOLVE_MIN_AGE
from gateway.payments import events as e
from gateway.payments.record import from_json
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.helpers import EVPAY, subprocess_env
from tests.payments.fixtures import DAY_TARIFF, policy
from tests.payments.test_refund_ops import SID, evpay, result
from tests.site_rig import write_config


def refund_sent(tmp_path: Path, age: timedelta, *, unknown: bool = False) -> Path:
    """A completed session whose refund of 100 was sent ``age`` ago (on the real clock) and not
    answered (or, with ``unknown``, answered unknown); the site's config file."""
    config = write_config(tmp_path)
    store = Store.open(tmp_path / "evpay.sqlite3")
    sent_at = datetime.now(UTC) - age
    clock = [sent_at - timedelta(hours=1)]
    host = EngineHost(store, policy(tariffs={"*": DAY_TARIFF}), lambda: clock[0])
    events: list[e.Event] = [
        e.CardPresented(SID, "card", "E1", "T1", "EUR"),
        result("preauthorize", Outcome.APPROVED, 5000, "7"),
        e.ChargerStarted(SID, "st", 1000),
        e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5000),
        result("capture", Outcome.APPROVED, None, "8", for_ref="7"),
    ]
    try:
        for n, event in enumerate(events):
            clock[0] = sent_at - timedelta(minutes=30 - n)
            host.handle(event)
        clock[0] = sent_at
        asked = e.RefundRequested(session_id=SID, event_id="goodwill", amount_minor=100, reason="x")
        host.handle(asked)
        if unknown:
            host.handle(result("refund", Outcome.UNKNOWN, None, None))
        s = host.load(SID)
        assert s is not None
        assert s.refunds[0].status.value == ("unknown" if unknown else "sent")
    finally:
        store.close()
    return config


def test_a_refund_sent_moments_ago_is_not_settled_by_hand(tmp_path: Path) -> None:
    config = refund_sent(tmp_path, timedelta(seconds=30))
    asked = evpay(config, "refund-resolve", SID, "goodwill", "--refunded", "--evidence", "journal")
    assert asked.returncode != 0
    minutes = f"{REFUND_RESOLVE_MIN_AGE.total_seconds() / 60:.0f} min"
    assert minutes in asked.stderr and "wait" in asked.stderr and "s more" in asked.stderr
    store = Store.open(tmp_path / "evpay.sqlite3", read_only=True)
    try:
        row = store.session(SID)
        assert row is not None
        (refund,) = from_json(row["data"]).refunds
        assert refund.status.value == "sent" and not refund.settled_by  # nothing settled
        assert not [j for j in store.journal(SID) if j["kind"] == "RefundSettled"]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("age", "unknown"),
    [(REFUND_RESOLVE_MIN_AGE + timedelta(minutes=1), False), (timedelta(seconds=30), True)],
    ids=["sent-long-ago", "unknown-moments-ago"],
)
def test_an_old_sent_refund_or_an_unknown_one_is_settled(
    tmp_path: Path, age: timedelta, unknown: bool
) -> None:
    config = refund_sent(tmp_path, age, unknown=unknown)
    done = evpay(config, "refund-resolve", SID, "goodwill", "--refunded", "--evidence", "journal")
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout


def test_the_help_says_how_long_a_sent_refund_waits() -> None:
    """The command's help names the minimum age (as the README does)."""
    shown = subprocess.run(
        [*EVPAY, "sessions", "refund-resolve", "--help"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0
    minutes = f"{REFUND_RESOLVE_MIN_AGE.total_seconds() / 60:.0f} min"
    assert minutes in " ".join(shown.stdout.split())
