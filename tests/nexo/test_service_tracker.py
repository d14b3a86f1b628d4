"""The ServiceID discipline as pure rules (time is a number here)."""

from __future__ import annotations

import pytest

from drivers.nexo import messages as nm
from drivers.nexo.errors import NexoTrackerError
from drivers.nexo.model import (
    ErrorCondition,
    MessageCategory,
    MessageClass,
    MessageHeader,
    MessageType,
    POIData,
    Response,
    Result,
    SaleData,
    TransactionIdentification,
)
from drivers.nexo.service_tracker import (
    AskStatus,
    Clear,
    Resolution,
    ServiceTracker,
    WaitUntil,
)

PAY = MessageCategory.PAYMENT


def status(
    result: Result, cond: ErrorCondition | None = None, sid: str | None = None
) -> nm.TransactionStatusResponse:
    repeated = None
    if sid is not None:
        tid = TransactionIdentification("x", "2026-01-01T00:00:00Z")
        header = MessageHeader(MessageClass.SERVICE, PAY, MessageType.RESPONSE, "S", "P", None, sid)
        body = nm.PaymentResponse(Response(Result.SUCCESS), SaleData(tid), POIData(tid))
        repeated = nm.RepeatedMessageResponse(header, payment_response=body)
    return nm.TransactionStatusResponse(Response(result, cond), None, repeated)


def test_send_needs_store_first() -> None:
    t = ServiceTracker()
    sid = t.new_service_id()
    with pytest.raises(NexoTrackerError):
        t.check_send(sid)
    t.store(sid, PAY, "req")
    t.check_send(sid)
    t.answered(sid)
    assert isinstance(t.next_step(0.0), Clear)


def test_lost_answer_demands_status_before_anything_else() -> None:
    t = ServiceTracker(retry_s=5.0)
    sid = t.new_service_id()
    t.store(sid, PAY, "req")
    t.check_send(sid)
    t.lost(sid, now=10.0)
    assert t.next_step(10.0) == AskStatus(sid, PAY)
    other = t.new_service_id()
    t.store(other, PAY, "req2")
    with pytest.raises(NexoTrackerError):
        t.check_send(other)  # nothing new goes out while sid is in doubt
    assert t.on_status(sid, status(Result.FAILURE, ErrorCondition.IN_PROGRESS), 10.0) is (
        Resolution.ASK_AGAIN
    )
    assert t.next_step(11.0) == WaitUntil(15.0, sid)
    assert t.next_step(15.0) == AskStatus(sid, PAY)
    assert t.on_status(sid, status(Result.SUCCESS, sid=sid), 15.0) is Resolution.ANSWERED
    t.check_send(other)


def test_not_found_means_never_took_effect() -> None:
    t = ServiceTracker()
    sid = t.new_service_id()
    t.store(sid, PAY, "req")
    t.lost(sid, 0.0)
    assert t.on_status(sid, status(Result.FAILURE, ErrorCondition.NOT_FOUND), 0.0) is (
        Resolution.NEVER_TOOK_EFFECT
    )
    assert isinstance(t.next_step(0.0), Clear)


def test_restart_puts_every_stored_service_in_doubt_and_never_reuses_an_id() -> None:
    t = ServiceTracker()
    a, b = t.new_service_id(), t.new_service_id()
    t.store(a, PAY, "req-a")
    t.store(b, MessageCategory.REVERSAL, "req-b")
    t.check_send(a)
    again = ServiceTracker.from_snapshot(t.snapshot())
    assert again.next_step(0.0) == AskStatus(a, PAY)
    assert {f.service_id for f in again.unresolved()} == {a, b}
    assert again.new_service_id() not in {a, b}


def test_in_flight_bound_and_service_id_length() -> None:
    t = ServiceTracker(max_in_flight=2, next_number=9_999_999_999)
    first = t.new_service_id()
    assert len(first) == 10
    t.store(first, PAY, "r")
    second = t.new_service_id()
    assert second == "1"  # wrapped, never 11 characters
    t.store(second, PAY, "r")
    with pytest.raises(NexoTrackerError):
        t.store(t.new_service_id(), PAY, "r")


def test_status_repeating_another_service_is_refused() -> None:
    t = ServiceTracker()
    sid = t.new_service_id()
    t.store(sid, PAY, "r")
    t.lost(sid, 0.0)
    with pytest.raises(NexoTrackerError):
        t.on_status(sid, status(Result.SUCCESS, sid="999"), 0.0)


def test_an_answer_found_by_status_is_kept_until_its_result_is_stored() -> None:
    t = ServiceTracker()
    sid = t.new_service_id()
    t.store(sid, PAY, "req")
    t.lost(sid, 0.0)
    assert t.on_status(sid, status(Result.SUCCESS, sid=sid), 0.0) is Resolution.ANSWERED
    assert isinstance(t.next_step(0.0), Clear) and t.unresolved() == ()
    # a crash now: the snapshot still names it, and the restart asks again
    again = ServiceTracker.from_snapshot(t.snapshot())
    assert again.next_step(0.0) == AskStatus(sid, PAY)
    t.answered(sid)  # the result is stored: now it may be forgotten
    assert t.snapshot()["in_flight"] == []
