"""Attack on refund-ops and zvt-eod (merged since 2fc69a2): a person's settlement of a refund of
unknown outcome (``evpay sessions refund-resolve``) against the daemon's and the acquirer's late
answers, the CLI's refund rule on partly captured sessions, first CDRs kept by retention, owing
hold references read in SQL, and end-of-day counts past one byte. Real SQLite stores, the CLI
as a subprocess, the engine host and the acquirer runner's own event mapping."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from drivers.base import Outcome
from drivers.money import Money
from gateway.acquirer.port import Modification
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import Hold, update
from gateway.payments.record import from_json, to_json
from gateway.payments.refunds import RefundStatus
from gateway.payments.session import Session, State
from gateway.runtime.acquirer_outcomes import outcome_events
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_parts import refund_request
from gateway.store import SessionRecord, Step, Store
from gateway.store.acquirer import StoredModification
from tests.payments.fixtures import T0, policy
from tests.payments.test_refund_ops import SID, evpay, result, seeded

# ---- 1. refund-resolve -----------------------------------------------------------------------


def _settle(host: EngineHost, refunded: bool, by: str = "bob") -> Session:
    s = host.handle(
        e.RefundSettled(
            session_id=SID,
            event_id=f"by-hand-{refunded}",
            refund_id="goodwill",
            refunded=refunded,
            evidence="the acquirer's report",
            by=by,
        )
    ).session
    assert s is not None
    return s


def _second_refund_in_flight(host: EngineHost) -> Session:
    """After the person's settlement, a new refund (B) is sent and waits for its answer."""
    s = host.handle(
        e.RefundRequested(session_id=SID, event_id="second", amount_minor=50, reason="more")
    ).session
    assert s is not None and s.refunds[-1].status is RefundStatus.SENT
    return s


def test_a_late_answer_for_a_settled_refund_is_never_applied_to_the_next_refund(
    tmp_path: Path,
) -> None:
    """Refund A settled by a person as not refunded, refund B sent since; the acquirer's late
    webhook names A. It must not settle B (B's money has not moved), and A's contradiction is
    recorded for a person."""
    _, store, host = seeded(tmp_path)
    try:
        _settle(host, refunded=False)
        _second_refund_in_flight(host)
        late = result("refund", Outcome.APPROVED, 100, "77", refund_id="goodwill")
        s = host.handle(late).session
        assert s is not None
        a, b = s.refunds
        assert b.status is RefundStatus.SENT, "A's answer settled B"
        assert a.status is RefundStatus.FAILED
        assert any("settled as failed by a person" in d for d in s.discrepancies)
    finally:
        store.close()


def test_an_overdue_mark_for_a_settled_refund_leaves_the_next_refund_in_flight(
    tmp_path: Path,
) -> None:
    """The acquirer runner's overdue mark (no webhook by the deadline) for A, after a person
    settled A and B was sent: it must name A, and B stays in flight."""
    _, store, host = seeded(tmp_path)
    try:
        _settle(host, refunded=True)
        _second_refund_in_flight(host)
        overdue = e.TerminalResultArrived(
            session_id=SID,
            event_id="acquirer:s1:refund:goodwill:overdue",
            operation=e.Operation.REFUND,
            outcome=Outcome.UNKNOWN,
            refund_id="goodwill",
        )
        s = host.handle(overdue).session
        assert s is not None and s.refunds[1].status is RefundStatus.SENT
        assert s.refunded_minor == 100
    finally:
        store.close()


def _webhook(status: str) -> StoredModification:
    mod = Modification(
        command_key=f"{SID}:refund:goodwill",
        kind="refund",
        payment_reference="PSP1",
        amount=Money(100, "EUR"),
    )
    at = T0 + timedelta(hours=3)
    return StoredModification(mod, "adyen", status, "PSP9", T0, 1, None, None, at, "REFUND")


def test_the_acquirers_refund_after_a_person_said_not_refunded_reaches_the_session(
    tmp_path: Path,
) -> None:
    """A person settled the refund as not refunded (not in the report yet); the acquirer's
    REFUND webhook then confirms it. The runner must hand it to the session (a discrepancy for a
    person), not drop it: the driver got 1.00 EUR back and our books say 0."""
    _, store, host = seeded(tmp_path)
    try:
        s = _settle(host, refunded=False)
        events = outcome_events(_webhook("confirmed"), s)
        assert events, "the acquirer's confirmed refund was dropped"
        for event in events:
            host.handle(event)
        after = host.load(SID)
        assert after is not None
        assert any("acquirer now says approved" in d for d in after.discrepancies)
    finally:
        store.close()


def test_a_failed_webhook_after_a_person_said_refunded_is_recorded(tmp_path: Path) -> None:
    _, store, host = seeded(tmp_path)
    try:
        s = _settle(host, refunded=True)
        for event in outcome_events(_webhook("failed"), s):
            host.handle(event)
        after = host.load(SID)
        assert after is not None and after.refunded_minor == 100
        assert after.discrepancies, "REFUND_FAILED after a person's 'refunded' left no trace"
    finally:
        store.close()


def test_a_terminals_late_answer_against_a_persons_settlement_is_recorded(
    tmp_path: Path,
) -> None:
    """A ZVT refund (no refund id in the terminal's answer) settled by a person as refunded
    while its answer was still to come; the terminal then declines it. The contradiction must
    be a discrepancy for a person, never silently dropped as 'a repeat'."""
    _, store, host = seeded(tmp_path)
    try:
        _settle(host, refunded=True)
        late = result("refund", Outcome.DECLINED, None, None)
        s = host.handle(late).session
        assert s is not None and s.refunded_minor == 100
        assert any("settled as done by a person" in d for d in s.discrepancies)
    finally:
        store.close()


def test_settling_twice_at_once_settles_once_and_tells_the_cpo_once(tmp_path: Path) -> None:
    """Two people settle the same refund at the same moment, one as refunded, one as not."""
    config, store, _ = seeded(tmp_path)
    store.close()
    from tests.helpers import EVPAY, subprocess_env

    procs = [
        subprocess.Popen(
            [
                *EVPAY,
                "sessions",
                "refund-resolve",
                SID,
                "goodwill",
                flag,
                "--evidence",
                "x",
                "--by",
                who,
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        for flag, who in (("--refunded", "alice"), ("--not-refunded", "bob"))
    ]
    codes = [p.wait(timeout=60) for p in procs]
    for p in procs:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
    assert sorted(codes) == [0, 2], codes
    store = Store.open(tmp_path / "evpay.sqlite3", read_only=True)
    try:
        row = store.session(SID)
        assert row is not None
        s = from_json(row["data"])
        (refund,) = s.refunds
        refunds = store.outbox.list(kind="session.refund", limit=10)
        assert len(refunds) == (1 if refund.status is RefundStatus.DONE else 0)
        assert s.refunded_minor == (100 if refund.status is RefundStatus.DONE else 0)
        settled = [j for j in store.journal(SID) if j["kind"] == "RefundSettled"]
        assert len(settled) == 1
    finally:
        store.close()


def test_settling_while_the_daemon_stores_the_real_answer(tmp_path: Path) -> None:
    """The daemon's host (its open-session cache warm) and a person's CLI: the person settles
    first; the daemon's step from its stale copy is refused by the store and recomputed, so the
    person's settlement stands and the terminal's agreeing answer is a no-op."""
    config, store, host = seeded(tmp_path)
    try:
        assert host.load(SID) is not None  # warm
        done = evpay(config, "refund-resolve", SID, "goodwill", "--refunded", "--evidence", "j")
        assert done.returncode == 0, done.stderr
        late = result("refund", Outcome.APPROVED, 100, "77", refund_id="goodwill")
        s = host.handle(late).session
        assert s is not None and s.refunded_minor == 100 and s.refunds[0].settled_by
        assert len(store.outbox.list(kind="session.refund", limit=10)) == 1
    finally:
        store.close()


def test_a_settled_refund_of_another_session_is_not_found(tmp_path: Path) -> None:
    config, store, _ = seeded(tmp_path)
    try:
        other = update(
            Session("s2", "E1", "T1", "EUR", State.COMPLETED, T0, holds=(Hold("9", 500),)),
            price_minor=500,
        )
        store.apply(
            Step(
                "seed-s2",
                sessions=[SessionRecord("s2", "completed", to_json(other), True, 0, "T1")],
            )
        )
    finally:
        store.close()
    asked = evpay(config, "refund-resolve", "s2", "goodwill", "--refunded", "--evidence", "x")
    assert asked.returncode == 2 and "no refund goodwill" in asked.stderr


# ---- 1b. the acquirer's overdue refund once a person has settled it --------------------------------


def _reconcile_kinds(config: Path) -> list[str]:
    import json

    from tests.helpers import EVPAY, subprocess_env

    done = subprocess.run(
        [
            *EVPAY,
            "reconcile",
            "--from",
            "2026-01-01T00:00:00+00:00",
            "--json",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return [str(f["kind"]) for f in json.loads(done.stdout)["findings"]]


def test_a_refund_a_person_settled_is_no_longer_an_unknown_missing_webhook(tmp_path: Path) -> None:
    """The acquirer took the refund and never sent its webhook (``missing_webhook``: 'its
    outcome is unknown'); a person settled it from the acquirer's report. Reconciliation must
    not go on saying its outcome is unknown (the refund now counts as done)."""
    config, store, _ = seeded(tmp_path)
    try:
        mod = Modification(
            command_key=f"{SID}:refund:goodwill",
            kind="refund",
            payment_reference="PSP1",
            amount=Money(100, "EUR"),
        )
        store.acquirer.enqueue("adyen", mod, T0)
        store.acquirer.received(mod.command_key, "PSP9", T0, T0 + timedelta(hours=1))
    finally:
        store.close()
    assert "missing_webhook" in _reconcile_kinds(config)
    done = evpay(config, "refund-resolve", SID, "goodwill", "--refunded", "--evidence", "report")
    assert done.returncode == 0, done.stderr
    assert "missing_webhook" not in _reconcile_kinds(config)


# ---- 1c. the correction's refund refund-resolve stores, after a newer correction ---------------


def test_the_stored_correction_refund_follows_a_newer_correction(tmp_path: Path) -> None:
    """333 captured, refund A (1.00) unknown, a correction to 2.00 waiting for it. A person
    settles A as not refunded: the CLI stores the correction's refund of 1.33. Before the daemon
    carries it out, the CPO corrects again to 2.50: the engine refunds 0.83 at once. The stored
    1.33 must not then be paid too (2.16 back on a 2.50 charge: the driver paid 1.17)."""
    config, store, host = seeded(tmp_path, correction=200)
    store.close()
    settled = evpay(config, "refund-resolve", SID, "goodwill", "--not-refunded", "--evidence", "r")
    assert settled.returncode == 0, settled.stderr
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        host = EngineHost(store, policy(), lambda: T0 + timedelta(hours=2))
        newer = e.PriceCorrected(session_id=SID, event_id="cdr-3", total_minor=250, reason="y")
        s = host.handle(newer).session
        assert s is not None and s.refunds[-1].amount_minor == 83
        host.handle(result("refund", Outcome.APPROVED, 83, "10", refund_id="cdr-3"))
        for request in store.inbox_pending("refund"):  # as the daemon does
            host.handle(refund_request(request))
        after = host.load(SID)
        assert after is not None
        given = sum(r.amount_minor for r in after.refunds if r.status.value in ("sent", "done"))
        assert given <= 333 - 250, [(r.id, r.amount_minor, r.status.value) for r in after.refunds]
        assert "made meanwhile" in after.refunds[-1].message
    finally:
        store.close()


def _carry_out(store: Store, host: EngineHost) -> list[c.RefundPayment]:
    """What the daemon does with the stored refund requests (engine_worker._requests)."""
    sent: list[c.RefundPayment] = []
    for request in store.inbox_pending("refund"):
        handled = host.handle(refund_request(request))
        sent += [x for x in handled.commands if isinstance(x, c.RefundPayment)]
    return sent


def test_a_second_settlement_for_the_same_correction_requests_its_refund_again(
    tmp_path: Path,
) -> None:
    """The correction's refund stored by the first settlement is refused (a technician's refund
    B went out first); B's answer is lost too and a person settles it. The correction still
    waits: its refund must be requested again, not skipped as the first request's step."""
    config, store, _ = seeded(tmp_path, correction=200)
    store.close()
    first = evpay(config, "refund-resolve", SID, "goodwill", "--not-refunded", "--evidence", "r")
    assert first.returncode == 0, first.stderr
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        host = EngineHost(store, policy(), lambda: T0 + timedelta(hours=2))
        ask = e.RefundRequested(session_id=SID, event_id="b", amount_minor=50, reason="plug")
        host.handle(ask)
        assert _carry_out(store, host) == []  # refused: B is in flight
        host.handle(result("refund", Outcome.UNKNOWN, None, None))
    finally:
        store.close()
    second = evpay(config, "refund-resolve", SID, "b", "--not-refunded", "--evidence", "r2")
    assert second.returncode == 0, second.stderr
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        host = EngineHost(store, policy(), lambda: T0 + timedelta(hours=3))
        assert [x.amount_minor for x in _carry_out(store, host)] == [133]
    finally:
        store.close()
