"""The crash campaign's end check names holds as the terminal does: a receipt number that came
round again (after 9,999 receipts, in a later batch) is another hold, not one claimed twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.campaigns.books import BookedHold
from tests.campaigns.crash_books import by_generation, stored_holds

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def _row(sid: str, minute: int, ref: str, captured: int) -> dict[str, Any]:
    hold = {"ref": ref, "captured_minor": captured, "status": "captured"}
    return {
        "id": sid,
        "created_at": T0 + timedelta(minutes=minute),
        "data": {"terminal": "t1", "holds": [hold]},
    }


def test_a_receipt_number_given_again_after_the_wrap_is_another_hold() -> None:
    book = [
        BookedHold("t1", "17", "booked", 5000, 120),  # batch 1
        BookedHold("t1", "17", "booked", 5000, 340),  # 9,999 receipts later, batch 7
    ]
    rows = [_row("late", 90, "17", 340), _row("early", 1, "17", 120)]
    violations: list[str] = []
    stored = stored_holds(rows, book, violations)
    assert violations == []
    named = {key: (stored[key][0], h.booked) for key, h in by_generation(book)}
    assert named == {("t1", "17", 0): ("early", 120), ("t1", "17", 1): ("late", 340)}


def test_two_sessions_on_one_hold_the_terminal_gave_once_is_a_violation() -> None:
    book = [BookedHold("t1", "17", "booked", 5000, 120)]
    violations: list[str] = []
    stored_holds([_row("a", 1, "17", 120), _row("b", 2, "17", 120)], book, violations)
    assert violations == ["sessions a and b both hold t1 17"]
