"""Issue 26, the operator's side of refunds, through the CLI on a real SQLite store: a refund
whose outcome never came is settled by a person (``evpay sessions refund-resolve``) with the
evidence journaled, its figures, debt and CPO message following; and ``evpay sessions refund``
asks the engine's own rule for which sessions may be refunded."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.base import Outcome
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import Hold, HoldStatus, update
from gateway.payments.reconcile import session_facts
from gateway.payments.record import from_json, to_json
from gateway.payments.session import Session, State
from gateway.runtime.engine_host import EngineHost
from gateway.store import SessionRecord, Step, Store
from tests.helpers import EVPAY, subprocess_env
from tests.payments.fixtures import T0, policy
from tests.site_rig import write_config

SID = "s1"


def evpay(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVPAY, "sessions", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )


def result(op: str, outcome: Outcome, amount: int | None, ref: str | None, **more: str) -> e.Event:
    return e.TerminalResultArrived(
        session_id=SID,
        event_id=f"{op}-{ref}-{outcome.value}",
        operation=e.Operation(op),
        outcome=outcome,
        amount_minor=amount,
        ref=ref,
        **more,  # type: ignore[arg-type]
    )


def seeded(tmp_path: Path, *, correction: int | None = None) -> tuple[Path, Store, EngineHost]:
    """A completed session (333 captured) with a refund of 100 whose answer was lost
    (``unknown``) and, with ``correction``, a corrected price that waits for it."""
    config = write_config(tmp_path)
    store = Store.open(tmp_path / "evpay.sqlite3")
    clock = [T0]
    host = EngineHost(store, policy(), lambda: clock[0])
    events: list[e.Event] = [
        e.CardPresented(SID, "card", "E1", "T1", "EUR"),
        result("preauthorize", Outcome.APPROVED, 5000, "7"),
        e.ChargerStarted(SID, "st", 1000),
        e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5000),
        result("capture", Outcome.APPROVED, 333, "8", for_ref="7"),
        e.RefundRequested(session_id=SID, event_id="goodwill", amount_minor=100, reason="sorry"),
        result("refund", Outcome.UNKNOWN, None, None),
    ]
    if correction is not None:
        events.append(
            e.PriceCorrected(session_id=SID, event_id="cdr-2", total_minor=correction, reason="x")
        )
    for n, event in enumerate(events):
        clock[0] = T0 + timedelta(minutes=n)
        host.handle(event)
    s = host.load(SID)
    assert s is not None and s.refunds[0].status.value == "unknown"
    return config, store, host


def test_a_refund_of_unknown_outcome_is_settled_as_refunded_with_its_evidence(
    tmp_path: Path,
) -> None:
    config, store, _ = seeded(tmp_path)
    store.close()
    evidence = "terminal journal shows refund receipt 0042"
    done = evpay(
        config,
        "refund-resolve",
        SID,
        "goodwill",
        "--refunded",
        "--evidence",
        evidence,
        "--by",
        "alice",
        "--ref",
        "42",
    )
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout and "refunded 1.00 EUR" in done.stdout
    store = Store.open(tmp_path / "evpay.sqlite3", read_only=True)
    try:
        row = store.session(SID)
        assert row is not None
        s = from_json(row["data"])
        (refund,) = s.refunds
        assert refund.status.value == "done" and refund.ref == "42"
        assert "alice" in refund.message and evidence in refund.message
        assert s.refunded_minor == 100 and row["data"]["refunded_minor"] == 100
        (entry,) = [j for j in store.journal(SID) if j["kind"] == "RefundSettled"]
        assert "alice" in entry["data"]["note"] and evidence in entry["data"]["note"]
        (message,) = store.outbox.list(kind="session.refund", limit=10)
        assert message.payload["amount_minor"] == 100 and message.payload["ref"] == "42"
        (payment,) = [p for p in store.payments(SID) if p["id"].endswith(":refund:goodwill")]
        assert payment["state"] == "done"
        assert session_facts(row).refunds_unsettled == 0  # no longer a reconciliation finding
    finally:
        store.close()
    again = evpay(
        config, "refund-resolve", SID, "goodwill", "--not-refunded", "--evidence", "second look"
    )
    assert again.returncode == 2 and "its outcome is known" in again.stderr
    unknown = evpay(config, "refund-resolve", SID, "nope", "--refunded", "--evidence", "x")
    assert unknown.returncode == 2 and "no refund nope" in unknown.stderr


def test_a_refund_settled_as_not_made_lets_the_waiting_correction_refund(tmp_path: Path) -> None:
    config, store, _ = seeded(tmp_path, correction=200)
    store.close()
    settled = evpay(
        config,
        "refund-resolve",
        SID,
        "goodwill",
        "--not-refunded",
        "--evidence",
        "not in the acquirer's settlement report",
        "--json",
    )
    assert settled.returncode == 0, settled.stderr
    assert '"status": "failed"' in settled.stdout and '"requested_minor": 133' in settled.stdout
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        host = EngineHost(store, policy(), lambda: T0 + timedelta(hours=2))
        s = host.load(SID)
        assert s is not None and s.refunds[0].status.value == "failed" and s.refunded_minor == 0
        (request,) = store.inbox_pending("refund")
        assert request["payload"]["amount_minor"] == 133
        assert request["payload"]["source"] == "cdr"
        # what the daemon does with the stored request (engine_worker._requests)
        p = request["payload"]
        ask = e.RefundRequested(
            session_id=SID,
            event_id=f"refund-{request['message_id']}",
            amount_minor=p["amount_minor"],
            reason=p["reason"],
            source=p["source"],
            inbox_id=request["message_id"],
        )
        sent = host.handle(ask)
        (cmd,) = [x for x in sent.commands if isinstance(x, c.RefundPayment)]
        assert cmd.amount_minor == 133
        assert sent.session is not None and sent.session.bill.correction_waiting == ""
        answer = result("refund", Outcome.APPROVED, 133, "9", refund_id=ask.event_id)
        final = host.handle(answer).session
        assert final is not None and final.refundable_minor == 200 and final.bill.owed_minor == 0
        assert [r.status.value for r in final.refunds] == ["failed", "done"]  # nothing refused
    finally:
        store.close()


# ---- which sessions `evpay sessions refund` takes: the engine's rule ---------------------------


def _stored(tmp_path: Path, state: State, holds: tuple[Hold, ...]) -> Path:
    config = write_config(tmp_path)
    store = Store.open(tmp_path / "evpay.sqlite3")
    s = update(Session(SID, "E1", "T1", "EUR", state, T0, holds=holds), price_minor=3000)
    record = SessionRecord(SID, state.value, to_json(s), state.value != "charging", 0, "T1")
    store.apply(Step("seed", sessions=[record]))
    store.close()
    return config


CAPTURED = Hold("7", 3000, captured_minor=1500, released_minor=1500, status=HoldStatus.CAPTURED)


@pytest.mark.parametrize(
    ("state", "holds", "allowed"),
    [
        (State.COMPLETED, (CAPTURED,), True),
        # a partly captured session: its top-up's capture stays unconfirmed, or was declined
        (
            State.CAPTURE_UNCONFIRMED,
            (CAPTURED, Hold("8", 1500, status=HoldStatus.UNCONFIRMED)),
            True,
        ),
        (State.CAPTURE_FAILED, (CAPTURED, Hold("8", 1500, status=HoldStatus.LAPSED)), True),
        (State.CAPTURE_FAILED, (Hold("7", 3000, status=HoldStatus.LAPSED),), False),
        (State.CHARGING, (Hold("7", 3000),), False),
    ],
    ids=["completed", "partly-unconfirmed", "partly-failed", "nothing-captured", "charging"],
)
def test_the_cli_refunds_what_the_engine_allows(
    tmp_path: Path, state: State, holds: tuple[Hold, ...], allowed: bool
) -> None:
    config = _stored(tmp_path, state, holds)
    asked = evpay(config, "refund", SID, "--amount", "1.00", "--reason", "goodwill")
    if allowed:
        assert asked.returncode == 0 and "requested" in asked.stdout, asked.stderr
    else:
        assert asked.returncode == 2 and "only a completed session" in asked.stderr, asked.stderr


def test_a_second_refund_while_one_is_unsettled_is_refused_at_once(tmp_path: Path) -> None:
    config, store, _ = seeded(tmp_path)
    store.close()
    asked = evpay(config, "refund", SID, "--amount", "0.50", "--reason", "more")
    assert asked.returncode == 2 and "another refund" in asked.stderr


def test_a_late_webhook_against_a_persons_settlement_is_a_discrepancy(tmp_path: Path) -> None:
    """The acquirer's webhook that comes after a person settled the refund: one that agrees is
    a no-op; one that says otherwise is recorded for a person, never applied over them."""
    _, store, host = seeded(tmp_path)
    try:
        settle = e.RefundSettled(
            session_id=SID,
            event_id="by-hand",
            refund_id="goodwill",
            refunded=False,
            evidence="not in the report",
            by="bob",
        )
        s = host.handle(settle).session
        assert s is not None and s.refunds[0].settled_by == "bob"
        late = result("refund", Outcome.APPROVED, 100, "77", refund_id="goodwill")
        s = host.handle(late).session
        assert s is not None and s.refunds[0].status.value == "failed" and s.refunded_minor == 0
        assert any("settled as failed by a person" in d for d in s.discrepancies)
    finally:
        store.close()
