"""The open pre-auth enquiry (06 23 87 FF FF) read only from the answer that lists: 06 1E B8
with BMP 87 (FF FF: none open) and/or TLV 23. A bare 06 1E B8 -- a terminal that lists nothing,
or the stale end of a booking the previous process sent -- is a failed enquiry, never "nothing
open": the engine books a hold missing from the list as released (issue 26, the double claim of
hold 398). The simulator plays both answers (``Variants.open_preauth_answer``); docs/ZVT-VARIANTS.md,
section 7."""

from __future__ import annotations

import asyncio

from drivers.base import Outcome
from drivers.money import Money, currency
from drivers.zvt import messages as m
from drivers.zvt.asyncio.client import SequenceOutcome
from drivers.zvt.asyncio.results import ResultReader
from drivers.zvt.constants import RECEIPT_NONE
from drivers.zvt.sequences import Aborted
from tests.zvt.conftest import Rig

EUR50 = Money(5000, "EUR")
UNKNOWN_RECEIPT = 9999


async def test_a_bare_b8_is_a_failed_enquiry_never_an_empty_list(rig: Rig) -> None:
    rig.sim.config.variants.open_preauth_answer = "bare"
    t = rig.make_driver()
    assert (await t.connect()).approved
    pre = await t.preauthorize(EUR50, "OP-1")
    enquiry = await t.open_preauthorizations()
    assert enquiry.outcome is Outcome.ERROR and not enquiry.approved
    assert "without BMP 87" in enquiry.message and enquiry.open_refs == ()
    assert list(map(str, rig.sim.open_preauths())) == [pre.ref]  # the hold is still there


async def test_the_listing_answer_and_its_explicit_none(rig: Rig) -> None:
    """The spec's form: BMP 87 FF FF (a Feig cVEND's capture) is a valid empty list; with holds
    open, BMP 87 names the first and TLV 23 all of them."""
    t = rig.make_driver()
    assert (await t.connect()).approved
    none = await t.open_preauthorizations()
    assert none.approved and none.open_refs == ()
    first = await t.preauthorize(EUR50, "OP-2")
    second = await t.preauthorize(EUR50, "OP-3")
    both = await t.open_preauthorizations()
    assert both.approved and both.open_refs == (first.ref, second.ref)


async def test_a_stale_end_of_the_previous_process_is_no_list(rig: Rig) -> None:
    """A process dies right after writing a release of a receipt the terminal does not know
    (its answer, 80 00 then a bare 06 1E B8, is never read). On the pty the terminal answers it
    while the next process already waits for its enquiry's acknowledgement: that 80 00 and
    06 1E B8 are taken as the enquiry's (ZVT answers carry no reference to their command).
    Neither they nor any later answer may say that the two open holds are gone."""
    t = rig.make_driver()
    assert (await t.connect()).approved
    refs = {(await t.preauthorize(EUR50, f"OP-{n}")).ref for n in (4, 5)}
    loop = asyncio.get_running_loop()
    release = m.pre_auth_reversal(UNKNOWN_RECEIPT, currency("EUR").numeric)
    t.client.link.send_apdu(release.to_apdu().encode(), loop.time())
    await t.client.transport.write(t.client.link.data_to_send())
    await asyncio.sleep(0.05)
    await t.close()  # killed: nothing read
    await asyncio.sleep(1.0)  # the supervisor restarts it
    fresh = rig.make_driver()
    await fresh.connect()
    for _ in range(3):
        enquiry = await fresh.open_preauthorizations()
        assert not enquiry.approved or set(enquiry.open_refs) == refs, enquiry


def _reader() -> ResultReader:
    reader = ResultReader()
    reader.terminal_id, reader._currency = None, currency("EUR")
    return reader


def test_a_completion_taken_for_the_answer_is_no_list() -> None:
    """A late 06 0F (another command's end, e.g. a swallowed registration) after an 80 00 ends
    the enquiry without any list: failed, not "nothing open"."""
    seq = SequenceOutcome(accepted=True, completion=m.completion())
    result = _reader()._interpret("open_preauthorizations", seq, money=False, requested=None)
    assert result.outcome is Outcome.ERROR and result.open_refs == ()


def test_only_the_listing_fields_make_a_list() -> None:
    reader = _reader()

    def read(answer: m.Message) -> tuple[Outcome, tuple[str, ...]]:
        seq = SequenceOutcome(accepted=True, aborted=Aborted(0xB8, answer))
        result = reader._interpret("open_preauthorizations", seq, money=False, requested=None)
        return result.outcome, result.open_refs

    assert read(m.abort_pt(0xB8)) == (Outcome.ERROR, ())
    assert read(m.abort_pt(0xB8, [m.bmp_receipt(RECEIPT_NONE)])) == (Outcome.APPROVED, ())
    assert read(m.abort_pt(0xB8, [m.bmp_receipt(12)])) == (Outcome.APPROVED, ("12",))
