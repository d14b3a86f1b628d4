"""Round-5 attack (issue 26, money edges), part 1: the open pre-auth enquiry's answers (driver
and engine), ``evpay sessions refund-resolve``'s minimum age and the tariff step_size lint.
Real parts: the ZVT simulator on a pty and loopback TCP, the CLI as a subprocess on a real
SQLite store, the sans-I/O engine for the deadline walk. Part 2 (the engine worker at a start)
is tests/attack/test_attack_round5_start.py."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.money import Money, currency
from drivers.sim.pt_payments import PtPayments
from drivers.zvt import messages as m
from drivers.zvt.asyncio.client import SequenceOutcome
from drivers.zvt.asyncio.results import ResultReader
from drivers.zvt.constants import RECEIPT_NONE
from drivers.zvt.fields import Bmp, Tlv, bcd_encode, encode_tlv
from drivers.zvt.sequences import Aborted
from gateway.payments import events as e
from gateway.payments.model import HoldStatus
from gateway.payments.session import Session, State
from gateway.payments.tariff_lint import step_size_hazards
from gateway.payments.tariff_ocpi import tariff_from_ocpi
from tests.attack.round3_rig import capturing
from tests.helpers import EVPAY, subprocess_env
from tests.payments.fixtures import T0, at
from tests.payments.fixtures import terminal_result as res
from tests.payments.test_refund_ops import SID, evpay
from tests.payments.test_refund_resolve_age import refund_sent
from tests.site_rig import site_toml
from tests.zvt.conftest import Rig

# ---- 2. the open pre-auth enquiry: only an answer that lists is a list --------------------


def _read(answer: m.Message) -> tuple[Outcome, tuple[str, ...]]:
    reader = ResultReader()
    reader.terminal_id, reader._currency = None, currency("EUR")
    seq = SequenceOutcome(accepted=True, aborted=Aborted(0xB8, answer))
    got = reader._interpret("open_preauthorizations", seq, money=False, requested=None)
    return got.outcome, got.open_refs


def _tlv23(*children: Tlv) -> Bmp:
    return Bmp(0x06, encode_tlv([Tlv(0x23, children=children)]))


def _entry(receipt: int) -> Tlv:
    return Tlv(0x08, bcd_encode(receipt, 2))


def test_bmp87_none_with_a_tlv23_list_reads_the_list() -> None:
    """BMP 87 FF FF ("none") yet TLV 23 naming 12 and 13: the holds listed win (absence is
    what the engine books on, so the contradiction must not read as "nothing open")."""
    answer = m.abort_pt(0xB8, [m.bmp_receipt(RECEIPT_NONE), _tlv23(_entry(12), _entry(13))])
    assert _read(answer) == (Outcome.APPROVED, ("12", "13"))


def test_an_empty_tlv23_is_the_documented_empty_list() -> None:
    """TLV 23 with no entry (with or without BMP 87 FF FF) is read as "none open", as
    docs/ZVT-VARIANTS.md section 7 says; the engine books no release on one such list."""
    assert _read(m.abort_pt(0xB8, [_tlv23()])) == (Outcome.APPROVED, ())
    none = m.abort_pt(0xB8, [m.bmp_receipt(RECEIPT_NONE), _tlv23()])
    assert _read(none) == (Outcome.APPROVED, ())


@pytest.mark.parametrize(
    "field",
    [Bmp(0x87, b"\xab\xcd"), _tlv23(Tlv(0x08, b"\xab\xcd"))],
    ids=["bmp87-not-bcd", "tlv23-entry-not-bcd"],
)
def test_a_malformed_listing_is_a_failed_enquiry_not_an_exception(field: Bmp) -> None:
    """A receipt that is not BCD: the enquiry failed (nothing known), never a raised decode
    error -- the terminal sweep calls the driver with no try around it, so an exception there
    ends that terminal's sweep for the rest of the run."""
    outcome, refs = _read(m.abort_pt(0xB8, [field]))
    assert outcome is Outcome.ERROR and refs == ()


async def test_a_malformed_listing_from_the_terminal_leaves_the_driver_usable(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same over the real line: the simulator answers the enquiry with BMP 87 = AB CD."""

    async def garbled(self: PtPayments, cmd: m.Message) -> None:
        del cmd
        await self.send(m.ack())
        await self.send_expect_ack(m.abort_pt(0xB8, [Bmp(0x87, b"\xab\xcd")]))

    t = rig.make_driver()
    assert (await t.connect()).approved
    pre = await t.preauthorize(Money(5000, "EUR"), "R5-1")
    monkeypatch.setattr(PtPayments, "partial_reversal", garbled)
    enquiry = await t.open_preauthorizations()
    assert not enquiry.approved and enquiry.open_refs == ()
    monkeypatch.undo()
    again = await t.open_preauthorizations()  # the line is still in step
    assert again.approved and again.open_refs == (pre.ref,)


def _walk(s: Session, minute: float) -> tuple[Session, list[Session]]:
    """Every enquiry fails (a bare B8 each time): fire the session's timer and answer each
    enquiry failed, until it ends; every state passed through."""
    seen = [s]
    for n in range(5000):  # 30 days of enquiries, 30 min apart at most
        if s.final:
            break
        assert s.timer is not None, (s.state, s.notes)  # a next action and a deadline
        kind, when = s.timer
        minute = max(minute, (when - T0).total_seconds() / 60)
        s = at(s, e.TimerFired(SID, f"t{n}", kind), minute)
        seen.append(s)
        if not s.final and kind is e.TimerKind.QUERY:
            s = at(s, e.OpenPreauthsReported(SID, f"q{n}", (), failed=True), minute)
            seen.append(s)
    return s, seen


def test_a_lost_capture_asked_in_vain_ends_unconfirmed_and_visible() -> None:
    s = at(capturing(), res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 61)
    assert s.state is State.CAPTURE_UNKNOWN
    s = at(s, e.OpenPreauthsReported(SID, "q", (), failed=True), 61)
    end, seen = _walk(s, 61)
    assert end.final and end.captured_minor == 0, end.notes  # nothing booked without evidence
    assert end.holds[0].status is HoldStatus.UNCONFIRMED and end.bill.owed_minor > 0
    assert all(x.timer is not None for x in seen if not x.final)


def test_a_lost_release_asked_in_vain_ends_lapsed_never_released() -> None:
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7), 0)
    s = at(s, e.TimerFired(SID, "t", e.TimerKind.START), 4)
    s = at(s, res("release", Outcome.UNKNOWN, None, None, for_ref="7"), 5)
    assert s.state is State.RELEASE_UNKNOWN
    end, seen = _walk(s, 5)
    assert end.final and end.released_minor == 0 and end.captured_minor == 0, end.notes
    assert end.holds[0].status is HoldStatus.LAPSED and end.state is State.RELEASE_FAILED
    assert all(x.timer is not None for x in seen if not x.final)


# ---- 4. refund-resolve's minimum age --------------------------------------------------------


def _no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr


def test_a_sent_refund_stamped_in_the_future_is_refused_clearly(tmp_path: Path) -> None:
    """Clock skew: the daemon stamped the refund an hour ahead of this host. Refused (its
    answer may still come), saying the time is in the future rather than "sent -3600 s ago"."""
    config = refund_sent(tmp_path, -timedelta(hours=1))
    asked = evpay(config, "refund-resolve", SID, "goodwill", "--refunded", "--evidence", "j")
    _no_traceback(asked)
    assert asked.returncode == 2, asked
    assert "future" in asked.stderr and " -" not in asked.stderr.split("wait")[0], asked.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("other", "goodwill", "--refunded", "--evidence", "j"), "no session other"),
        ((SID, "refund-someone-else", "--refunded", "--evidence", "j"), "no refund"),
        ((SID, "goodwill", "--refunded", "--evidence", "   "), "--evidence"),
        ((SID, "goodwill", "--refunded", "--not-refunded", "--evidence", "j"), "not allowed"),
        ((SID, "goodwill", "--evidence", "j"), "required"),
    ],
    ids=["no-session", "refund-of-another", "blank-evidence", "both-outcomes", "no-outcome"],
)
def test_refund_resolve_bad_input_is_a_clear_error(
    tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    config = refund_sent(tmp_path, timedelta(hours=1))
    done = evpay(config, "refund-resolve", *args)
    _no_traceback(done)
    assert done.returncode != 0 and said in done.stdout + done.stderr, done


def test_an_unknown_refund_of_another_session_is_not_settled_here(tmp_path: Path) -> None:
    """s1's refund named on a session that has none: a clear error, s1 untouched."""
    config = refund_sent(tmp_path, timedelta(seconds=5), unknown=True)
    done = evpay(config, "refund-resolve", "s2", "goodwill", "--refunded", "--evidence", "j")
    _no_traceback(done)
    assert done.returncode != 0


# ---- 5. the step_size lint -------------------------------------------------------------------


def _tariff(*elements: str) -> str:
    return f'{{ id = "T", currency = "EUR", elements = [ {", ".join(elements)} ] }}'


def _el(kind: str, step: str, restrictions: str = "") -> str:
    more = f", restrictions = {{ {restrictions} }}" if restrictions else ""
    return f'{{ price_components = [ {{ type = "{kind}", price = "0.5", step_size = {step} }} ]{more} }}'


@pytest.mark.parametrize(
    ("tariff", "code", "said"),
    [
        (_tariff(), 2, "at least 1 item"),
        (_tariff(_el("ENERGY", "1", 'reservation = "RESERVATION"')), 2, "reservation"),
        (_tariff(_el("FLAT", "5000", "max_power = 2"), _el("FLAT", "1")), 0, "ok"),
        (
            _tariff(_el("ENERGY", "99999999999999999999", "max_power = 2"), _el("ENERGY", "1")),
            0,
            "warning",
        ),
        (_tariff(_el("ENERGY", "0", "max_power = 2"), _el("ENERGY", "-5")), 2, "greater than"),
        (_tariff(_el("ENERGY", '"x"')), 2, "step_size"),
    ],
    ids=["no-elements", "reservation-only", "flat-only", "huge-step", "negative-step", "text-step"],
)
def test_config_validate_lints_any_tariff_without_a_traceback(
    tmp_path: Path, tariff: str, code: int, said: str
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_toml(tmp_path / "x.sqlite3", {}, charger=None, tariffs=[tariff]))
    done = subprocess.run(
        [*EVPAY, "config", "validate", str(path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )
    _no_traceback(done)
    assert done.returncode == code and said in done.stdout + done.stderr, done


def test_the_lint_on_a_flat_only_or_single_element_tariff_finds_nothing() -> None:
    flat = {"type": "FLAT", "price": "1.00", "step_size": 1}
    only_flat = {"id": "F", "currency": "EUR", "elements": [{"price_components": [flat]}]}
    assert step_size_hazards(tariff_from_ocpi(only_flat)) == ()
    many = [{"price_components": [flat], "restrictions": {"max_power": n}} for n in range(1, 60)]
    many.append({"price_components": [flat]})
    assert (
        step_size_hazards(tariff_from_ocpi({"id": "M", "currency": "EUR", "elements": many})) == ()
    )


# ---- 2. a killed process's answer taken for the next command (fixed: drivers/zvt/line_quiet) --


@pytest.mark.parametrize("rig", ["pty"], indirect=True)
async def test_a_killed_captures_answer_is_not_taken_for_the_next_capture(rig: Rig) -> None:
    """The process dies right after writing a capture of hold A (book total 10.00); the
    restarted one registers and captures hold B (20.00) on the same pty."""
    t = rig.make_driver()
    assert (await t.connect()).approved
    a = await t.preauthorize(Money(5000, "EUR"), "R5-A")
    b = await t.preauthorize(Money(5000, "EUR"), "R5-B")
    assert a.ref is not None and b.ref is not None
    loop = asyncio.get_running_loop()
    capture_a = m.book_total(int(a.ref), 1000, currency("EUR").numeric)
    t.client.link.send_apdu(capture_a.to_apdu().encode(), loop.time())
    await t.client.transport.write(t.client.link.data_to_send())
    await asyncio.sleep(0.05)
    await t.close()  # killed: nothing read
    await asyncio.sleep(1.0)
    fresh = rig.make_driver()
    await fresh.connect()
    got = await fresh.capture(b.ref, Money(5000, "EUR"), Money(2000, "EUR"), "R5-B")
    hold_b = rig.sim.state.transactions[int(b.ref)]
    # was (before line_quiet): APPROVED, amount 10.00, receipt 3 (A's booking); hold B open
    assert not got.approved or (got.amount == Money(2000, "EUR") and hold_b.state != "open")
