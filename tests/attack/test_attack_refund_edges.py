"""Attack on refund-ops and zvt-eod (merged since 2fc69a2), the edges beside refund-resolve
(test_attack_refund_ops.py): the CLI's refund rule on partly captured sessions and two requests
racing, first CDRs kept by retention across a prune and a restart, owing hold references read
in SQL, and end-of-day counts past one byte (wrapped, saturated, a group not reported)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.batch_totals import batch_findings, terminal_count
from gateway.payments.corrections import refund_refusal
from gateway.payments.model import Hold, HoldStatus, update
from gateway.payments.reconcile_facts import BatchFacts, SessionFacts
from gateway.payments.record import to_json
from gateway.payments.refunds import RefundStatus
from gateway.payments.session import Session, State
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_parts import refund_request
from gateway.store import InboxMessage, SessionRecord, Step, Store
from gateway.store.retention import CORRECTION_WINDOW
from tests.payments.fixtures import T0, policy
from tests.payments.test_refund_ops import SID

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
        for request in store.inbox_pending("refund"):  # as the daemon does
            handled = host.handle(refund_request(request))
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


def test_a_correction_of_a_compacted_session_refunds_once_across_prunes(tmp_path: Path) -> None:
    """A completed session (3.33 captured) pruned and compacted (its journal archived, its row
    kept without defaults); the CPO's correction to 2.00 comes after, and again after the next
    prune has forgotten its step: 1.33 is refunded once."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from drivers.base import Outcome
    from gateway.payments.record import compact
    from tests.payments.test_refund_ops import result

    now = [T0]
    store = Store.open(tmp_path / "evpay.sqlite3", clock=lambda: now[0])
    host = EngineHost(store, policy(), lambda: now[0])
    key = Ed25519PrivateKey.generate()

    def prune(days: int) -> None:
        now[0] += timedelta(days=days)
        store.prune(
            key, cutoff=now[0] - timedelta(days=90), archive_dir=tmp_path / "a", compact=compact
        )

    correction = e.PriceCorrected(
        session_id=SID, event_id="price-cdr-2", total_minor=200, reason="x"
    )
    try:
        for n, event in enumerate(
            (
                e.CardPresented(SID, "card", "E1", "T1", "EUR"),
                result("preauthorize", Outcome.APPROVED, 5000, "7"),
                e.ChargerStarted(SID, "st", 1000),
                e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5000),
                result("capture", Outcome.APPROVED, 333, "8", for_ref="7"),
            )
        ):
            now[0] = T0 + timedelta(minutes=n)
            host.handle(event)
        prune(200)
        sent = host.handle(correction)
        assert [x.amount_minor for x in sent.commands if isinstance(x, c.RefundPayment)] == [133]
        host.handle(result("refund", Outcome.APPROVED, 133, "9", refund_id="price-cdr-2"))
        prune(200)
        again = host.handle(correction)
        assert not [x for x in again.commands if isinstance(x, c.RefundPayment)]
        s = host.load(SID)
        assert s is not None and s.refunded_minor == 133 and s.bill.owed_minor == 0
    finally:
        store.close()
