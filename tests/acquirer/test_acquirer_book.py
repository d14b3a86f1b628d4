"""The acquirer book on a real SQLite file: webhooks before our record of the answer, repeats,
failure reports overturning successes, nothing settled twice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from drivers.money import Money
from gateway.acquirer.port import Modification, ModificationEvent
from gateway.store import Store
from tests.acquirer.rig import Clock


def event(code: str, psp: str, *, success: bool = True, merchant: str = "") -> ModificationEvent:
    return ModificationEvent(
        event=code,
        psp_reference=psp,
        original_reference="P1",
        merchant_reference=merchant,
        merchant_account="EVPayTest",
        success=success,
        amount=Money(100, "EUR"),
        reason="",
        event_date="2026-12-07T12:00:00+01:00",
        live=False,
    )


REFUND = Modification("s1/refund", "refund", "P1", amount=Money(100, "EUR"))


def test_a_webhook_before_the_answer_settles_when_the_answer_is_recorded(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    book = store.acquirer
    book.enqueue("adyen", REFUND, clock())
    # a second refund on the same payment makes matching by payment ambiguous: kept unmatched
    book.enqueue(
        "adyen", Modification("s1/refund2", "refund", "P1", amount=Money(5, "EUR")), clock()
    )
    assert book.record_events("adyen", [event("REFUND", "X1")], clock()) == 1
    assert [n["command_key"] for n in book.notifications("adyen")] == [None]
    book.received("s1/refund", "X1", clock(), clock() + timedelta(hours=1))
    stored = book.get("s1/refund")
    assert stored is not None and stored.status == "confirmed"
    assert [n["command_key"] for n in book.notifications("adyen")] == ["s1/refund"]
    other = book.get("s1/refund2")
    assert other is not None and other.status == "queued"
    store.close()


def test_repeats_count_and_a_failure_report_overturns_a_success(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    book = store.acquirer
    book.enqueue("adyen", REFUND, clock())
    book.received("s1/refund", "X1", clock(), clock() + timedelta(hours=1))
    assert book.record_events("adyen", [event("REFUND", "X1")] * 2, clock()) == 1
    assert book.notifications("adyen")[0]["repeats"] == 1
    assert book.record_events("adyen", [event("REFUND_FAILED", "X1")], clock()) == 1
    failed = book.get("s1/refund")
    assert failed is not None and failed.status == "failed"
    # the same four identity fields are a repeat, whatever else differs: never applied again
    assert book.record_events("adyen", [event("REFUND", "X1", merchant="again")], clock()) == 0
    still = book.get("s1/refund")
    assert still is not None and still.status == "failed"
    assert book.overdue(clock() + timedelta(hours=2)) == []  # settled: no finding
    store.close()


def test_a_declined_event_of_another_kind_settles_nothing(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    book = store.acquirer
    book.enqueue("adyen", REFUND, clock())
    book.received("s1/refund", "X1", clock(), clock() + timedelta(hours=1))
    book.record_events("adyen", [event("CAPTURE", "X1", merchant="s1/refund")], clock())
    stored = book.get("s1/refund")
    assert stored is not None and stored.status == "received"
    (late,) = book.overdue(clock() + timedelta(hours=1))
    assert late.modification == REFUND
    store.close()
