"""Attack on refund-ops and zvt-eod (merged since 2fc69a2): a person's settlement of a refund of
unknown outcome (``evpay sessions refund-resolve``) against the daemon's and the acquirer's late
answers, the CLI's refund rule on partly captured sessions, first CDRs kept by retention, owing
hold references read in SQL, and end-of-day counts past one byte. Real SQLite stores, the CLI
as a subprocess, the engine host and the acquirer runner's own event mapping."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.money import Money
from gateway.acquirer.port import Modification
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.batch_totals import batch_findings, terminal_count
from gateway.payments.corrections import refund_refusal
from gateway.payments.model import Hold, HoldStatus, update
from gateway.payments.reconcile_facts import BatchFacts, SessionFacts
from gateway.payments.record import from_json, to_json
from gateway.payments.refunds import RefundStatus
from gateway.payments.session import Session, State
from gateway.runtime.acquirer_runner import AcquirerRunner
from gateway.runtime.engine_host import EngineHost
from gateway.store import InboxMessage, SessionRecord, Step, Store
from gateway.store.acquirer import StoredModification
from gateway.store.retention import CORRECTION_WINDOW
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


def _runner(host: EngineHost) -> AcquirerRunner:
    return AcquirerRunner(
        host=host, routes={}, acquirers={}, take=lambda _: None, references=lambda t, r: None
    )


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
        events = _runner(host)._events(_webhook("confirmed"), s)
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
        for event in _runner(host)._events(_webhook("failed"), s):
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


# ---- 2. `evpay sessions refund` on partly captured sessions --------------------------------------

PART = Hold("7", 3000, captured_minor=1500, released_minor=1500, status=HoldStatus.CAPTURED)


@pytest.mark.parametrize(
    ("state", "second"),
    [
        (State.CAPTURE_UNCONFIRMED, Hold("8", 1500, status=HoldStatus.UNCONFIRMED)),
        (State.CAPTURE_FAILED, Hold("8", 1500, status=HoldStatus.LAPSED)),
    ],
    ids=["unconfirmed", "failed"],
)
def test_a_partly_captured_session_refunds_only_its_evidenced_capture(
    state: State, second: Hold
) -> None:
    s = update(Session(SID, "E1", "T1", "EUR", state, T0, holds=(PART, second)), price_minor=3000)
    assert refund_refusal(s, 1500) == ""
    assert "more than the 15.00 EUR" in refund_refusal(s, 1501)
    unproven = replace_holds(s, Hold("7", 3000, status=HoldStatus.UNCONFIRMED))
    assert "only a completed session" in refund_refusal(unproven, 1)


def replace_holds(s: Session, *holds: Hold) -> Session:
    from dataclasses import replace

    return replace(s, holds=holds)


def test_two_refund_requests_racing_give_back_at_most_the_capture(tmp_path: Path) -> None:
    """Two technicians ask for the whole capture at once (different reasons): the CLI's check
    passes for both (neither is stored yet); the engine sends one and refuses the other."""
    from tests.helpers import EVPAY, subprocess_env
    from tests.payments.test_refund_ops import _stored

    config = _stored(tmp_path, State.COMPLETED, (PART,))
    procs = [
        subprocess.Popen(
            [
                *EVPAY,
                "sessions",
                "refund",
                SID,
                "--amount",
                "15.00",
                "--reason",
                why,
                "--config",
                str(config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=subprocess_env(),
        )
        for why in ("goodwill", "broken plug")
    ]
    assert all(p.wait(timeout=60) in (0, 2) for p in procs)
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        host = EngineHost(store, policy(), lambda: T0 + timedelta(hours=1))
        sent = 0
        for request in store.inbox_pending("refund"):  # as engine_worker._requests does
            p = request["payload"]
            handled = host.handle(
                e.RefundRequested(
                    session_id=SID,
                    event_id=f"refund-{request['message_id']}",
                    amount_minor=p["amount_minor"],
                    reason=p["reason"],
                    source=p["source"],
                    inbox_id=request["message_id"],
                )
            )
            sent += sum(isinstance(x, c.RefundPayment) for x in handled.commands)
        s = host.load(SID)
        assert s is not None and sent == 1
        assert sum(r.amount_minor for r in s.refunds if r.status is not RefundStatus.REFUSED) == (
            1500
        )
    finally:
        store.close()


# ---- 3. retention: the first CDR after a prune and a restart --------------------------------------


def test_a_correction_after_a_prune_and_a_restart_is_still_a_correction(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.ocpi.charger import OcpiChargerLink
    from gateway.payments.charger import ChargerEvent
    from tests.ocpi.cdrs import cdr

    now = [datetime(2026, 1, 6, tzinfo=UTC)]
    store = Store.open(tmp_path / "r.sqlite3", clock=lambda: now[0])
    try:
        for n, (cdr_id, before) in enumerate((("CDR-1", "3.00"), ("CDR-1b", "2.80"))):
            now[0] += timedelta(minutes=1 + n)
            payload = cdr(cdr_id, before).to_json()
            store.apply(
                Step(
                    f"in:{cdr_id}",
                    inbox=[InboxMessage(cdr_id, "cpo", "cdr", payload)],
                    inbox_processed=[cdr_id],
                )
            )
        now[0] += timedelta(days=200)  # retention of 90 days, well inside the window
        assert timedelta(days=200) < CORRECTION_WINDOW
        store.prune(
            Ed25519PrivateKey.generate(),
            cutoff=now[0] - timedelta(days=90),
            archive_dir=tmp_path / "a",
        )
        assert [m["message_id"] for m in store.inbox("cdr")] == ["CDR-1"]
        # a restart: the link's memory of first CDRs is empty
        link = OcpiChargerLink(None, "", "", {"E1": "LOC1"}, ("DE", "EVP"), lambda: now[0], store)
        heard: list[ChargerEvent] = []
        link.subscribe(heard.append)
        link.cdr_pushed(cdr("CDR-1c", "2.50"))
        link.cdr_pushed(cdr("CDR-1", "3.00"))  # the first one pushed again: not a correction
    finally:
        store.close()
    assert [h.kind for h in heard][:1] == ["price_corrected"]
    assert [h.kind for h in heard].count("price_corrected") == 1


# ---- 4. owing hold references in SQL ------------------------------------------------------------


def test_a_debt_whose_hold_is_valid_to_the_microsecond_keeps_its_hold(tmp_path: Path) -> None:
    """``julianday`` against the session JSON's expiry (isoformat with microseconds and an
    offset): a hold valid 1 ms more, and one on another terminal, a top-up hold of the same
    session, the owing column at zero."""
    now = datetime(2026, 12, 7, 21, 0, 0, 500_000, tzinfo=UTC)
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        holds = (Hold("7", 1000, status=HoldStatus.UNCONFIRMED), Hold("8", 500))
        s = Session("a", "E1", "T1", "EUR", State.CAPTURE_UNCONFIRMED, now, holds=holds)
        s = update(s, expires_at=now + timedelta(milliseconds=1), owed_minor=1500)
        store.apply(
            Step("seed", sessions=[SessionRecord("a", s.state.value, to_json(s), True, 1500, "T1")])
        )
        assert sorted(store.owing_hold_refs("T1", now)) == ["7", "8"]
        assert store.owing_hold_refs("T1", now + timedelta(milliseconds=2)) == []
        assert store.owing_hold_refs("T2", now) == []
    finally:
        store.close()


# ---- 5. end of day past 255 payments per card group ---------------------------------------------

AT = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)


def _journal(n: int, each: int = 100) -> list[SessionFacts]:
    at = AT - timedelta(hours=1)
    return [
        SessionFacts(
            f"s{i}",
            "T1",
            "completed",
            "EUR",
            "mastercard",
            at,
            at,
            at,
            each,
            each,
            captures=((at, each),),
        )
        for i in range(n)
    ]


def _found(journal: int, totals: dict[str, tuple[int, int]]) -> list[tuple[str, str]]:
    batch = BatchFacts("T1", AT - timedelta(days=1), AT, "EUR", totals)
    return [(f.kind, f.detail) for f in batch_findings(batch, _journal(journal))]


@pytest.mark.parametrize(
    ("journal", "sent", "amount", "kinds"),
    [
        (300, 44, 30_000, []),  # wrapped, agrees
        (300, 44, 29_900, ["amount_mismatch"]),  # wrapped, one payment's amount missing
        (300, 43, 29_900, ["missing_in_terminal_totals"]),
        (600, 255, 60_000, []),  # saturated, agrees
        (600, 255, 59_000, ["amount_mismatch"]),
        (256, 0, 25_600, []),  # 256 wrapped to 0
        (256, 0, 0, ["missing_in_terminal_totals"]),  # the terminal booked none of them
        (10, 10, 26_600, ["amount_mismatch"]),  # 256 more in the terminal than the journal
    ],
)
def test_a_real_mismatch_never_hides_behind_the_one_byte_count(
    journal: int, sent: int, amount: int, kinds: list[str]
) -> None:
    assert [k for k, _ in _found(journal, {"mastercard": (sent, amount)})] == kinds


def test_a_card_group_the_terminal_did_not_report_is_not_read_as_256(tmp_path: Path) -> None:
    """The journal has 256 Mastercard payments; the terminal's totals list no Mastercard at
    all. That is 0 payments for 0, missing from the terminal — not '256 (sent as 0)'."""
    kinds = dict(_found(256, {"visa": (0, 0)})) | dict(_found(256, {}))
    assert list(kinds) == ["missing_in_terminal_totals"], kinds
    assert "(sent as 0)" not in kinds["missing_in_terminal_totals"]


def test_terminal_count_reads_the_wrap_both_ways() -> None:
    assert terminal_count(44, journal=300) == 300
    assert terminal_count(45, journal=300) == 301
    assert terminal_count(250, journal=260) == 250  # 6 fewer, not 506
    assert terminal_count(255, journal=600) == 600
    assert terminal_count(200, journal=100) == 200


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
