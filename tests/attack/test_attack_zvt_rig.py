"""Adversarial review of issue 30: the driver against the simulator playing the field variants,
over a real pty (serial framing) and loopback TCP (tests/zvt/conftest.py's ``rig``)."""

from __future__ import annotations

import pytest

from drivers.base import Outcome
from drivers.money import Money
from tests.zvt.conftest import Rig

EUR = "EUR"


def eur(minor: int) -> Money:
    return Money(minor, EUR)


# ---- top-up: increment or total ---------------------------------------------------------------


async def test_an_increment_answer_under_the_total_setting_is_unknown_not_a_guess(rig: Rig) -> None:
    rig.sim.config.extensions = "same_receipt"
    rig.sim.config.variants.topup_amount = "increment"
    t = rig.make_driver(incremental=True, topup_amount="total")
    await t.connect()
    pre = await t.preauthorize(eur(1000), "AT-1")
    more = await t.add_hold(pre.ref or "", pre.trace_no, eur(3000), "AT-1")
    assert rig.sim.state.transactions[int(pre.ref or "")].amount == 4000  # the PT holds 40.00
    assert more.outcome is Outcome.UNKNOWN, (more.outcome, more.amount)


async def test_the_misread_top_up_overcharges_at_capture(rig: Rig) -> None:
    rig.sim.config.extensions = "same_receipt"
    rig.sim.config.variants.topup_amount = "increment"
    t = rig.make_driver(incremental=True, topup_amount="total")
    await t.connect()
    pre = await t.preauthorize(eur(1000), "AT-2")
    more = await t.add_hold(pre.ref or "", pre.trace_no, eur(3000), "AT-2")
    if more.approved:  # the engine's hold = what it had + what the driver says was added
        held = eur(1000 + (more.amount.minor if more.amount else 0))
        cap = await t.capture(pre.ref or "", held, eur(2500), "AT-2")
        assert cap.approved
    booked = rig.sim.state.transactions[int(pre.ref or "")]
    assert not more.approved or booked.booked <= 2500, booked  # PT booked 35.00 for 25.00


async def test_a_total_answer_under_the_increment_setting_is_unknown(rig: Rig) -> None:
    rig.sim.config.extensions = "same_receipt"
    rig.sim.config.variants.topup_amount = "total"
    t = rig.make_driver(incremental=True, topup_amount="increment")
    await t.connect()
    pre = await t.preauthorize(eur(1000), "AT-3")
    more = await t.add_hold(pre.ref or "", pre.trace_no, eur(3000), "AT-3")
    assert more.outcome is Outcome.UNKNOWN and more.amount is None


async def test_two_top_ups_on_a_total_terminal_add_up(rig: Rig) -> None:
    rig.sim.config.extensions = "same_receipt"
    rig.sim.config.variants.topup_amount = "total"
    t = rig.make_driver(incremental=True, topup_amount="total")
    await t.connect()
    pre = await t.preauthorize(eur(1000), "AT-4")
    one = await t.add_hold(pre.ref or "", pre.trace_no, eur(3000), "AT-4")
    two = await t.add_hold(pre.ref or "", pre.trace_no, eur(500), "AT-4")
    assert one.amount == eur(3000) and two.amount == eur(500)
    assert rig.sim.state.transactions[int(pre.ref or "")].amount == 4500


async def test_a_total_answer_after_a_driver_restart_is_unknown_not_a_guess(rig: Rig) -> None:
    """The hold's last total lives in memory only: after a restart nothing is known, and the
    answer must be UNKNOWN (recovery), never the total taken as the increment."""
    rig.sim.config.extensions = "same_receipt"
    rig.sim.config.variants.topup_amount = "total"
    t = rig.make_driver(incremental=True, topup_amount="total")
    await t.connect()
    pre = await t.preauthorize(eur(1000), "AT-5")
    await t.close()
    again = rig.make_driver(incremental=True, topup_amount="total")
    await again.connect()
    more = await again.add_hold(pre.ref or "", pre.trace_no, eur(3000), "AT-5")
    assert more.outcome is Outcome.UNKNOWN and more.amount is None


# ---- status-only completion -----------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        0xF0,
        0xFF,
        0x06,
        0x9C,
    ],
)
async def test_a_status_byte_alone_that_looks_like_a_version_or_a_bmp_is_not_ready(
    rig: Rig, status: int
) -> None:
    """``06 0F 01 F0``: a high nibble F starts the LLLVAR version form; ``06 0F 01 06``: the BMP
    container tag. Whatever the byte, a non-zero status is never "ready"."""
    rig.sim.config.variants.status_version = False
    rig.sim.config.variants.terminal_status = status
    t = rig.make_driver()
    assert (await t.connect()).approved
    assert not (await t.status()).approved


# ---- 84 00 00 and 1F73 together, on the real links -----------------------------------------


async def test_84_00_acks_with_numbered_results_and_a_lost_ack_book_once(rig: Rig) -> None:
    if rig.kind == "tcp":
        pytest.skip("TCP has no link-level ACK to lose")
    v = rig.sim.config.variants
    v.positive_ack, v.sequence_numbers = "8400", True
    rig.sim.config.result_ack_lost, rig.sim.config.link_t2_s = 1, 0.5
    t = rig.make_driver()
    await t.connect()
    stored: list[object] = []

    async def persist(result: object) -> None:
        stored.append(result)

    pre = await t.preauthorize(eur(5000), "AT-6", persist)
    assert pre.approved and len(stored) == 1
    assert list(map(str, rig.sim.open_preauths())) == [pre.ref]


# ---- character sets -------------------------------------------------------------------------


async def test_an_announced_utf8_receipt_does_not_change_the_amount(rig: Rig) -> None:
    v = rig.sim.config.variants
    v.charset, v.announce_charset, v.receipt_title = "utf-8", True, "€ ÄÖÜ 12,34"
    t = rig.make_driver(charset="iso-8859-1")
    await t.connect()
    pre = await t.preauthorize(eur(5000), "AT-7")
    cap = await t.capture(pre.ref or "", eur(5000), eur(1234), "AT-7")
    assert cap.approved and cap.amount == eur(1234)
    assert cap.receipt_lines[0] == "€ ÄÖÜ 12,34"


@pytest.mark.parametrize("reask", [False, True])
async def test_card_first_with_a_lost_result_ack_books_once(rig: Rig, reask: bool) -> None:
    if rig.kind == "tcp":
        pytest.skip("TCP has no link-level ACK to lose")
    rig.sim.config.variants.reask_card = reask
    rig.sim.config.variants.sequence_numbers = True
    rig.sim.config.result_ack_lost, rig.sim.config.link_t2_s = 1, 0.5
    t = rig.make_driver()
    await t.connect()
    assert (await t.read_card(5)).approved
    pre = await t.preauthorize(eur(5000), "AT-8")
    assert pre.approved and list(map(str, rig.sim.open_preauths())) == [pre.ref]


def test_status_byte_ff_alone_decodes_as_the_terminal_status() -> None:
    from drivers.zvt import messages as m

    assert m.decode(bytes.fromhex("060f01ff")).terminal_status == 0xFF


async def test_text_sent_to_the_terminal_is_in_its_configured_charset(rig: Rig) -> None:
    t = rig.make_driver(charset="iso-8859-15")
    await t.connect()
    sent: list[bytes] = []
    t.client.tap = lambda direction, apdu: sent.append(apdu) if direction == "ECR->PT" else None
    assert (await t.display(["0,39 €/kWh", "Ä"], 5)).approved
    shown = next(a for a in sent if a[:2] == b"\x06\xe0")
    assert "€".encode("iso-8859-15") in shown and "Ä".encode("iso-8859-15") in shown, shown.hex()


# ---- card first: the card asked again and never given, or the driver aborting meanwhile -------


async def test_card_first_reasked_card_never_presented_is_no_money(rig: Rig) -> None:
    rig.sim.config.variants.reask_card = True
    rig.sim.config.outcomes.append("approve")  # the read card
    rig.sim.config.outcomes.append("timeout")  # the pre-auth: the card is not presented again
    t = rig.make_driver()
    await t.connect()
    await t.read_card(5)
    pre = await t.preauthorize(eur(5000), "AT-9")
    assert not pre.approved and pre.outcome is not Outcome.UNKNOWN, pre
    assert list(map(str, rig.sim.open_preauths())) == []


async def test_card_first_abort_while_the_card_is_asked_again_is_no_money(rig: Rig) -> None:
    import asyncio

    rig.sim.config.variants.reask_card = True
    rig.sim.config.card_wait_s = 1.5
    t = rig.make_driver()
    await t.connect()
    await t.read_card(5)
    task = asyncio.create_task(t.preauthorize(eur(5000), "AT-10"))
    await asyncio.sleep(0.4)  # the PT shows "insert card" again and waits
    aborted = await t.abort()
    pre = await task
    assert aborted.approved and not pre.approved, (aborted, pre)
    assert list(map(str, rig.sim.open_preauths())) == []
