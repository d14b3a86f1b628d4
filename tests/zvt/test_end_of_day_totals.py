"""End of day (06 50) over a busy batch, the driver against the simulator on a real pty and
loopback TCP: BMP 60 counts each card group's payments in one binary byte, and the receipt
counter (2 bytes BCD) wraps from 9999 to 1. A site with more than 255 payments of one card
group in a batch must still get its totals (the simulator used to crash building them)."""

from __future__ import annotations

import pytest

from drivers.base import BrandTotal
from drivers.sim.pt_state import Transaction
from tests.zvt.conftest import Rig

PAYMENTS = 300  # one card group, beyond what one byte counts


def _book_sales(rig: Rig, *, first_receipt: int, amount: int) -> list[int]:
    """PAYMENTS booked sales in the terminal's open batch, numbered as its counter does."""
    state, receipts = rig.sim.state, []
    state.next_receipt = first_receipt
    for _ in range(PAYMENTS):
        tx = Transaction(state.next_receipt, state.next_trace, "sale", amount, state="booked")
        state.transactions[tx.receipt] = tx
        receipts.append(tx.receipt)
        state.next_receipt = state.next_receipt % 9999 + 1
        state.next_trace += 1
    return receipts


@pytest.mark.parametrize(("overflow", "count"), [("wrap", PAYMENTS % 256), ("cap", 255)])
async def test_three_hundred_payments_of_one_card_group(
    rig: Rig, overflow: str, count: int
) -> None:
    rig.sim.config.variants.totals_count = "wrap" if overflow == "wrap" else "cap"
    t = rig.make_driver()
    assert (await t.connect()).approved
    receipts = _book_sales(rig, first_receipt=9900, amount=177)
    eod = await t.end_of_day()
    assert eod.approved
    # The turnover is exact; the count is what one byte carries.
    assert eod.totals == (BrandTotal("mastercard", count, PAYMENTS * 177, "EUR"),)
    # The batch ran over the receipt counter's wrap: from 9900 round to 200.
    assert receipts[-1] == 200
    assert eod.batch_range == (str(9900), str(200))
    assert rig.sim.state.transactions == {}


async def test_a_card_group_of_exactly_256_payments_still_shows_its_turnover(rig: Rig) -> None:
    """A count that wrapped to 0 is not an empty group: the turnover says otherwise."""
    t = rig.make_driver()
    assert (await t.connect()).approved
    state = rig.sim.state
    for receipt in range(1, 257):
        state.transactions[receipt] = Transaction(receipt, receipt, "sale", 100, state="booked")
    state.next_receipt = 257
    eod = await t.end_of_day()
    assert eod.totals == (BrandTotal("mastercard", 0, 25600, "EUR"),)
