"""The ZVT driver against the simulator over real ptys (serial framing) and loopback TCP."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from drivers.base import BrandTotal, Outcome, TerminalResult
from drivers.money import Money
from drivers.zvt.link import SerialLink
from tests.zvt.conftest import Rig

EUR50 = Money(5000, "EUR")


async def test_registration_and_status(rig: Rig) -> None:
    t = rig.make_driver()
    reg = await t.connect()
    assert reg.approved and reg.terminal_id == "52523535"
    assert rig.sim.state.registered and rig.sim.state.text_blocks  # asked for 06 D3 receipts
    status = await t.status()
    assert status.approved and status.details["software_version"] == "EVPAY-SIM-1.0"


async def test_wrong_password_is_refused(rig: Rig) -> None:
    reg = await rig.make_driver(password="999999").connect()
    assert reg.outcome is Outcome.ERROR and reg.result_code == 0x6B


async def test_preauth_then_partial_reversal(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    stored: list[TerminalResult] = []

    async def persist(result: TerminalResult) -> None:
        assert (
            rig.sim.state.transactions[int(result.ref or "")].state == "open"
        )  # before the PT hears back
        stored.append(result)

    pre = await t.preauthorize(EUR50, "SESSION-1", persist)
    assert pre.approved and pre.amount == EUR50 and stored == [pre]
    assert (
        pre.card is not None
        and pre.card.masked_pan == "541333******0074"
        and pre.card.brand == "MasterCard"
    )
    cap = await t.capture(pre.ref or "", EUR50, Money(1234, "EUR"), "SESSION-1")
    assert cap.approved and cap.amount == Money(1234, "EUR")
    assert "Amount 12.34 EUR" in cap.receipt_lines
    tx = rig.sim.state.transactions[int(pre.ref or "")]
    assert (tx.state, tx.booked) == ("booked", 1234)
    again = await t.capture(pre.ref or "", EUR50, Money(1234, "EUR"), "SESSION-1")
    assert again.outcome is Outcome.ERROR and again.result_code == 0xB4  # never booked twice


async def test_preauth_then_book_total(rig: Rig) -> None:
    t = rig.make_driver(capture_mode="book_total")
    await t.connect()
    pre = await t.preauthorize(EUR50, "S2")
    cap = await t.capture(pre.ref or "", EUR50, Money(4999, "EUR"), "S2")
    assert cap.approved
    assert rig.sim.state.transactions[int(pre.ref or "")].booked == 4999
    assert "0624" in rig.sim.state.commands


async def test_an_exact_capture_books_the_amount_whatever_the_terminal_holds(rig: Rig) -> None:
    """A hold whose top-up was lost may be bigger at the terminal than we know: releasing
    ``held - amount`` (06 23) would book the difference too, so the amount itself is booked."""
    t = rig.make_driver()  # partial_reversal by default
    await t.connect()
    pre = await t.preauthorize(EUR50, "S4")
    rig.sim.state.transactions[
        int(pre.ref or "")
    ].amount += 2000  # a top-up that stood unknown to us
    cap = await t.capture(pre.ref or "", EUR50, Money(1234, "EUR"), "S4", exact=True)
    assert cap.approved and rig.sim.state.transactions[int(pre.ref or "")].booked == 1234
    assert "0624" in rig.sim.state.commands and "0623" not in rig.sim.state.commands


async def test_zero_capture_releases_the_whole_hold(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    pre = await t.preauthorize(EUR50, "S3")
    rel = await t.capture(pre.ref or "", EUR50, Money(0, "EUR"), "S3")
    assert rel.approved and rel.operation == "release"
    assert rig.sim.state.transactions[int(pre.ref or "")].state == "reversed"
    assert (await t.open_preauthorizations()).open_refs == ()


async def test_sale_then_reversal(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    sale = await t.sale(Money(990, "EUR"))
    assert sale.approved
    rev = await t.reverse(sale.ref or "")
    assert rev.approved
    assert rig.sim.state.transactions[int(sale.ref or "")].state == "reversed"


@pytest.mark.parametrize(
    ("outcome", "expected", "code"),
    [
        ("decline", Outcome.DECLINED, 0x05),
        ("card_removed", Outcome.DECLINED, 0x64),
        ("timeout", Outcome.ABORTED, 0x6C),
        ("busy", Outcome.BUSY, 0x9C),
    ],
)
async def test_unhappy_card_outcomes(rig: Rig, outcome: str, expected: Outcome, code: int) -> None:
    t = rig.make_driver()
    await t.connect()
    rig.sim.config.outcomes.append(outcome)
    result = await t.preauthorize(EUR50, "S4")
    assert (result.outcome, result.result_code) == (expected, code)
    assert list(map(str, rig.sim.open_preauths())) == []
    assert (await t.preauthorize(EUR50, "S5")).approved  # the terminal is usable afterwards


async def test_partial_approval_reports_the_approved_amount(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    rig.sim.config.outcomes.append("partial:3000")
    result = await t.preauthorize(EUR50, "S6")
    assert result.approved and result.amount == Money(3000, "EUR")


async def test_abort_during_card_wait(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    rig.sim.config.card_wait_s = 5.0
    running = asyncio.create_task(t.preauthorize(EUR50, "S7"))
    await asyncio.sleep(0.3)
    aborted = await t.abort()
    assert aborted.approved
    result = await running
    assert (result.outcome, result.result_code) == (Outcome.ABORTED, 0x6C)
    assert list(map(str, rig.sim.open_preauths())) == []


async def test_disconnect_mid_transaction_then_reconnect(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    rig.sim.config.outcomes.append("disconnect")
    lost = await t.preauthorize(EUR50, "S8")
    assert lost.outcome is Outcome.UNKNOWN  # accepted, then silence or a dropped line
    enquiry = await t.open_preauthorizations()  # reconnects and re-registers by itself (TCP)
    assert enquiry.approved and enquiry.open_refs == ()
    assert (await t.preauthorize(EUR50, "S9")).approved


async def test_open_transaction_recovered_after_restart(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    rig.sim.config.outcomes.append("power_loss")
    held: list[TerminalResult] = []

    async def persist(result: TerminalResult) -> None:
        held.append(result)

    lost = await t.preauthorize(EUR50, "S10", persist)
    assert lost.outcome is Outcome.UNKNOWN
    assert held and held[0].approved  # the approval was stored before it was acknowledged
    await t.close()
    fresh = rig.make_driver()  # the gateway restarts: a new driver, nothing in memory
    await fresh.connect()
    enquiry = await fresh.open_preauthorizations()
    assert enquiry.open_refs == (held[0].ref,)
    release = await fresh.release(held[0].ref or "", EUR50)
    assert release.approved
    assert (await fresh.open_preauthorizations()).open_refs == ()


async def test_end_of_day_refused_while_a_preauth_is_open_then_done(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    pre = await t.preauthorize(EUR50, "S11")
    blocked = await t.end_of_day()
    assert blocked.outcome is Outcome.ERROR and blocked.result_code == 0x77
    await t.capture(pre.ref or "", EUR50, Money(700, "EUR"), "S11")
    eod = await t.end_of_day()
    assert eod.approved and eod.amount == Money(700, "EUR")
    assert eod.totals == (
        BrandTotal("mastercard", 1, 700, "EUR"),
    )  # BMP 60: count and amount per card group
    assert eod.batch_range is not None and eod.batch_range[0] == pre.ref


async def test_a_capture_reversed_before_end_of_day_and_a_refund_after(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    pre = await t.preauthorize(EUR50, "S12")
    cap = await t.capture(pre.ref or "", EUR50, Money(1500, "EUR"), "S12")
    rev = await t.reverse(cap.ref or "")  # the booking's receipt: the day is still open
    assert rev.approved and rev.amount == Money(1500, "EUR")
    assert (await t.reverse(cap.ref or "")).outcome is Outcome.ERROR  # never twice
    sale = await t.sale(Money(2000, "EUR"))
    eod = await t.end_of_day()
    assert eod.totals == (
        BrandTotal("mastercard", 1, 2000, "EUR"),
    )  # the reversed capture is not in the batch
    assert (
        await t.reverse(sale.ref or "")
    ).outcome is Outcome.ERROR  # after end of day: no reversal
    refund = await t.refund(Money(500, "EUR"))
    assert refund.approved and refund.amount == Money(500, "EUR") and refund.ref is not None


async def test_display_print_diagnose_and_last_result(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    assert (await t.display(["Bitte Karte", "vorhalten"], 10)).approved
    assert rig.sim.state.displayed == ["Bitte Karte", "vorhalten"]
    assert (await t.print_text(["Invoice INV-1", "Fiscal sig ABC"])).approved
    assert rig.sim.state.printed == ["Invoice INV-1", "Fiscal sig ABC"]
    assert (await t.diagnose()).approved
    pre = await t.preauthorize(EUR50, "S12")
    last = await t.last_result()
    assert last.approved and last.ref == pre.ref


async def test_read_card_tells_a_bank_card(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    card = await t.read_card(10)
    assert card.approved and card.card is not None
    assert card.card.is_payment_card and card.card.aid == "A0000000041010"


@pytest.mark.parametrize("rig", ["pty"], indirect=True)  # line faults exist on serial framing only
@pytest.mark.parametrize("fault", ["nak_next", "corrupt_next", "noise"])
async def test_line_faults_are_survived_on_serial(rig: Rig, fault: str) -> None:
    t = rig.make_driver()
    await t.connect()
    setattr(rig.sim.config, fault, 2 if fault != "noise" else 7)
    pre = await t.preauthorize(EUR50, "S13")
    assert pre.approved
    cap = await t.capture(pre.ref or "", EUR50, Money(100, "EUR"), "S13")
    assert cap.approved
    link = t.client.link
    assert isinstance(link, SerialLink)  # the simulator's pty speaks the serial framing
    if fault == "nak_next":
        assert link.stats["naks_received"] == 2 and link.stats["retransmits"] == 2
    if fault == "corrupt_next":
        assert link.stats["naks_sent"] == 2


@pytest.mark.parametrize("mode", ["none", "new_receipt", "same_receipt"])
async def test_add_hold_plays_each_terminal_variant(
    rig: Rig, mode: Literal["none", "new_receipt", "same_receipt"]
) -> None:
    rig.sim.config.extensions = mode
    t = rig.make_driver(incremental=True)
    await t.connect()
    pre = await t.preauthorize(Money(1500, "EUR"), "S9")
    assert pre.approved and pre.trace_no is not None
    more = await t.add_hold(pre.ref or "", pre.trace_no, Money(1500, "EUR"), "S9")
    if mode == "none":
        assert more.outcome is Outcome.ERROR  # the engine then stops the charge at the cap
        return
    assert more.approved and more.amount == Money(1500, "EUR")
    if mode == "new_receipt":
        assert more.ref != pre.ref and list(map(str, rig.sim.open_preauths())) == [
            pre.ref,
            more.ref,
        ]
    else:
        assert more.ref == pre.ref and rig.sim.state.transactions[int(pre.ref or "")].amount == 3000


async def test_add_hold_is_refused_without_the_terminal_setting(rig: Rig) -> None:
    t = rig.make_driver()
    await t.connect()
    more = await t.add_hold("1", 1, Money(1500, "EUR"), "S9")
    assert more.outcome is Outcome.ERROR and "cannot add" in more.message


@pytest.mark.parametrize("fault", ["no_receipt", "no_result_code"])
async def test_an_approval_missing_its_receipt_or_result_code_is_not_an_approval(
    rig: Rig, fault: str
) -> None:
    rig.sim.config.outcomes.append(fault)
    t = rig.make_driver()
    await t.connect()
    pre = await t.preauthorize(EUR50, "S10")
    assert pre.outcome is Outcome.UNKNOWN  # the engine asks the terminal instead of charging


@pytest.mark.parametrize("echo", ["booked", "reversed"])
async def test_the_repeat_of_the_last_result_shows_the_capture_as_the_terminal_echoed_it(
    rig: Rig, echo: Literal["booked", "reversed"]
) -> None:
    rig.sim.config.echo = echo
    t = rig.make_driver()
    await t.connect()
    pre = await t.preauthorize(EUR50, "S11")
    cap = await t.capture(pre.ref or "", EUR50, Money(1234, "EUR"), "S11")
    expected = 1234 if echo == "booked" else 5000 - 1234
    assert cap.approved and cap.amount == Money(expected, "EUR")
    last = await t.last_result()
    assert last.approved and last.ref == cap.ref and last.amount == Money(expected, "EUR")


@pytest.mark.parametrize("variant", ["reverse", "keep"])
async def test_an_approval_whose_connection_closed_before_its_acknowledgement(
    rig: Rig, variant: Literal["reverse", "keep"]
) -> None:
    """The ECR dies between storing the result and acknowledging it. ZVT 2.2.8: the terminal
    reverses what nobody acknowledged ("reverse", the default); a terminal that books it anyway
    on TCP ("keep") is played too: the gateway must survive both (the crash campaign's t1 keeps).
    On a serial line nothing closes: the terminal's wait for the acknowledgement runs out."""
    if rig.kind == "pty":
        pytest.skip("a pty does not tell the terminal that the other side is gone")
    rig.sim.config.unacked_on_close = variant
    t = rig.make_driver()
    await t.connect()

    async def die(result: TerminalResult) -> None:
        await t.close()  # the process is gone before its 80 00
        raise ConnectionError("killed")

    with pytest.raises(ConnectionError):
        await t.preauthorize(EUR50, "S5", die)
    async with asyncio.timeout(5):
        while True:
            holds = [x for x in rig.sim.state.transactions.values() if x.kind == "preauth"]
            if holds and (variant == "keep" or holds[-1].state != "open"):
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(
        0.2
    )  # long enough for a terminal that keeps it to change its mind: it must not
    assert holds[-1].state == ("reversed" if variant == "reverse" else "open")


async def test_a_command_cancelled_by_its_callers_deadline_does_not_wedge_the_driver(
    rig: Rig,
) -> None:
    """Found by the crash campaign: the daemon's 30 s registration deadline cancelled a
    registration mid-sequence, and every later command on that terminal failed with "a sequence
    is running" until the next restart. Now the next command opens the line and registers again.
    Over a pty this once failed about one try in ten: the simulator, still waiting for the card,
    took the driver's new registration for the card and never answered it, and its link layer
    then dropped every identical repeat as a retransmission (see the test below)."""
    t = rig.make_driver()
    await t.connect()
    rig.sim.config.card_wait_s = 1.0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await t.preauthorize(EUR50, "S6")
    rig.sim.config.card_wait_s = 0.05
    results: list[TerminalResult] = []
    async with asyncio.timeout(20):
        while not results or not results[-1].approved:
            results.append(
                await t.status()
            )  # the terminal may still be busy with the old one at first
    assert all("sequence is running" not in r.message for r in results), [
        r.message for r in results
    ]


async def test_a_command_sent_while_the_terminal_is_master_is_refused_busy_not_swallowed(
    rig: Rig,
) -> None:
    """An ECR that restarted mid-payment registers while the PT still waits for the card. The
    PT must answer that command (busy, 84 9C), not swallow it: an ECR repeats an unanswered
    command byte for byte, and a serial link takes a byte-identical frame for a retransmission
    whenever nothing was sent in between -- the two would never talk again."""
    t = rig.make_driver()
    await t.connect()
    rig.sim.config.card_wait_s = 0.6
    rig.sim.config.result_ack_timeout_s = 5.0  # longer than the driver's T3: it repeats meanwhile
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await t.preauthorize(EUR50, "S8")
    await t.close()  # the ECR process is gone
    again = rig.make_driver()  # and back, while the PT still waits for the card
    refused = []
    async with asyncio.timeout(15):
        while not (reg := await again.connect()).approved:
            refused.append(reg.outcome)
            await asyncio.sleep(0.2)
    commands = rig.sim.state.commands
    if rig.kind == "pty":  # the payment went on, unacknowledged, and was reversed
        # Opening the line, the driver refuses (NAK) the result the PT still sends and waits
        # for silence (docs/ZVT-VARIANTS.md, 8); a registration that meets the PT still
        # master is refused busy, never swallowed.
        assert set(refused) <= {Outcome.BUSY}, (refused, commands)
        assert ("0600 busy" in commands) == bool(refused), (refused, commands)
        assert [x.state for x in rig.sim.state.transactions.values()] == ["reversed"]
    else:  # the closed connection ended that sequence before any card was read
        assert refused == [] and rig.sim.state.transactions == {}
    assert commands[:2] == ["0600", "0622"] and commands[-1] == "0600"


async def test_identical_please_wait_statuses_are_each_acknowledged(rig: Rig) -> None:
    """Real PTs repeat "please wait" (04 FF 17) while the host authorises. Each is a new
    message that needs its own 80 00: the link layer must not take the repeats for
    retransmissions of a frame whose ACK was lost."""
    rig.sim.config.please_wait = 3
    t = rig.make_driver()
    await t.connect()
    pre = await t.preauthorize(EUR50, "S9")
    assert pre.approved
    assert rig.sim.state.unanswered == 0


async def test_a_result_repeated_after_our_answer_is_booked_once(rig: Rig) -> None:
    """The line eats our ACK to the 04 0F: the PT repeats the frame after its T2, when we have
    already stored the result and answered 80 00. The link delivers the repeat (it cannot tell
    it from a new message); the sequence answers it again and reports one result, not two."""
    if rig.kind == "tcp":
        pytest.skip("TCP has no link-level ACK to lose")
    rig.sim.config.result_ack_lost, rig.sim.config.link_t2_s = 1, 0.5
    t = rig.make_driver()
    await t.connect()
    stored: list[TerminalResult] = []

    async def persist(result: TerminalResult) -> None:
        stored.append(result)

    pre = await t.preauthorize(EUR50, "S10", persist)
    assert pre.approved and len(stored) == 1
    assert (
        list(map(str, rig.sim.open_preauths())) == [pre.ref] and rig.sim.config.result_ack_lost == 0
    )
    assert (await t.status()).approved  # the extra 80 00 confused neither side
