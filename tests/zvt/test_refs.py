"""A ZVT hold's reference is its receipt number as decimal text, and only that converts back
(``drivers/zvt/refs.py``, the one place that reads a reference as a number)."""

from __future__ import annotations

import pytest

from drivers.errors import DriverError, UnknownReference
from drivers.zvt.refs import hold_ref, receipt_number


def test_a_receipt_number_is_its_decimal_text_without_padding() -> None:
    assert hold_ref(42) == "42" and hold_ref(0) == "0" and hold_ref(None) is None
    assert receipt_number(hold_ref(9999)) == 9999


@pytest.mark.parametrize(
    "ref", ["", "0042", "12a", "-1", "10000", "TX1@2026-01-05", "\uff14\uff12"]
)
def test_a_reference_that_is_no_receipt_number_is_a_typed_error(ref: str) -> None:
    with pytest.raises(UnknownReference) as caught:
        receipt_number(ref)
    assert isinstance(caught.value, DriverError) and caught.value.code == "reference_unknown"
