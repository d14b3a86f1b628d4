"""Receipt profiles and the engine's fiscal sub-machine, pure: what each country's receipt
carries, that a receipt missing a required field says so, and that fiscal data arriving late
is delivered once as an e-receipt."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from drivers.base import Outcome
from gateway.fiscal.profiles import PROFILES, hr_check_url
from gateway.fiscal.receipt import (
    FiscalData,
    MeterProof,
    ReceiptFacts,
    ReceiptState,
    VatLine,
    printable,
    vat_breakdown,
)
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.session import Policy, Session, State, Transition, transition
from tests.payments.fixtures import T0, policy

SID = "s1"
AT = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
FACTS = ReceiptFacts(
    reference="EVP-s1",
    evse="HR*EVP*E1",
    at=AT,
    energy_wh=12_345,
    price_minor=1190,
    paid_minor=1190,
    owed_minor=0,
    currency="EUR",
    vat=(VatLine("25", 952, 238),),
    tariff=("0.60 EUR/kWh",),
    card={"brand": "Mastercard", "masked_pan": "541333******0074"},
    terminal_ref="42",
    e_receipt_url="https://cpo.example/r/EVP-s1",
)
SIGNED = FiscalData(
    "17/EVP1/1",
    "https://cpo.example/inv/17",
    {"zki": "a" * 32, "jir": "6f7e-1", "issued_at": "2026-11-26T09:31:00+00:00"},
)


def test_vat_breakdown_adds_up_to_the_price_paid() -> None:
    assert vat_breakdown([(Decimal(19), Decimal("2.80"))], 333, "EUR") == (VatLine("19", 280, 53),)
    two = vat_breakdown(
        [(Decimal(19), Decimal("1.00")), (Decimal(7), Decimal("1.005")), (Decimal(19), Decimal(1))],
        346,
        "EUR",
    )
    assert (
        two == (VatLine("7", 101, 7), VatLine("19", 200, 38))
        and sum(v.net_minor + v.tax_minor for v in two) == 346
    )
    assert vat_breakdown([(None, Decimal(5))], 500, "EUR") == (VatLine("", 500, 0),)
    assert vat_breakdown([(Decimal(10), Decimal(100))], 110, "JPY") == (
        VatLine("10", 100, 10),
    )  # 0 decimals


def test_printable_drops_accents_and_wraps() -> None:
    assert printable("Račun broj 17, iznos 11,90 € — đak") == ["Racun broj 17, iznos 11,90 ? ? dak"]
    assert [len(x) <= 40 for x in printable("x" * 95)] == [True, True, True]


def test_croatian_check_url_by_jir_or_zki() -> None:
    issued = datetime(2026, 11, 26, 9, 31, tzinfo=UTC)
    assert (
        hr_check_url("6f7e-1", "z", issued, 1190)
        == "https://porezna.gov.hr/rn?jir=6f7e-1&datv=20261126_0931&izn=1190"
    )
    assert (
        hr_check_url(None, "ab12", issued, 5)
        == "https://porezna.gov.hr/rn?zki=ab12&datv=20261126_0931&izn=5"
    )


def test_croatian_receipt_complete_field_by_field() -> None:
    r = PROFILES["HR"].render(FACTS, SIGNED)
    assert r.complete and r.missing == ()
    assert r.lines == (
        "EV charging at HR*EVP*E1",
        "Date 2026-11-26 09:30",
        "Invoice 17/EVP1/1",
        "Invoice at https://cpo.example/inv/17",
        "Energy 12.345 kWh",
        "Net 25% 9.52 EUR",
        "VAT 25% 2.38 EUR",
        "Total 11.90 EUR",
        "Paid by card 11.90 EUR",
        "  Mastercard 541333******0074",
        "  terminal receipt 42",
        "Nacin placanja: K (kartica)",
        f"ZKI: {'a' * 32}",
        "JIR: 6f7e-1",
        "QR: https://porezna.gov.hr/rn?jir=6f7e-1",
        "&datv=20261126_0931&izn=1190",
    )
    assert r.upstream == (
        "Invoice: 17/EVP1/1",
        f"ZKI: {'a' * 32}",
        "JIR: 6f7e-1",
        "Receipt: complete",
    )


def test_croatian_receipt_without_the_jir_or_without_anything_is_pending() -> None:
    zki_only = PROFILES["HR"].render(FACTS, replace(SIGNED, fields={"zki": "b" * 32}))
    assert zki_only.missing == ("jir",)
    assert "JIR: pending (the receipt is reported" in zki_only.lines
    assert any(line.startswith("QR: https://porezna.gov.hr/rn?zki=bbbb") for line in zki_only.lines)
    assert zki_only.lines[-3:] == (
        "FISCAL DATA PENDING",
        "missing: jir",
        "e-receipt: https://cpo.example/r/EVP-s1",
    )
    nothing = PROFILES["HR"].render(FACTS, None)
    assert nothing.missing == ("invoice", "zki", "jir") and "Invoice EVP-s1" in nothing.lines
    assert not any(line.startswith(("ZKI", "JIR", "QR")) for line in nothing.lines)  # nothing faked
    assert nothing.upstream[-1] == "Receipt: pending (invoice, zki, jir)"


def test_german_receipt_carries_the_signed_meter_data_and_the_price_shown_before() -> None:
    proof = MeterProof(
        "EMH-0815", "ab" * 32, 1000, 13_345, True, "signature valid", "04" + "cd" * 32
    )
    facts = replace(FACTS, evse="DE*EVP*E1", vat=(VatLine("19", 1000, 190),), meter=proof)
    r = PROFILES["DE"].render(facts, None)
    assert r.complete
    assert r.lines[:5] == (
        "EV charging at DE*EVP*E1",
        "Date 2026-11-26 09:30",
        "Invoice EVP-s1",
        "Energy 12.345 kWh",
        "Price as shown before charging:",
    )
    for line in (
        "  0.60 EUR/kWh",
        "Net 19% 10.00 EUR",
        "VAT 19% 1.90 EUR",
        "Total 11.90 EUR",
        "Signed meter data (OCMF, Eichrecht):",
        "  meter EMH-0815",
        "  start 1000 Wh, stop 13345 Wh",
        "  signature verified",
        "  record SHA-256 abababababababab",
        "No TSE signature: charge points are",
        "exempt (KassenSichV)",
    ):
        assert line in r.lines, line
    assert r.upstream == (
        "Invoice: EVP-s1",
        "OCMF: meter EMH-0815 abababababababab verified",
        "Receipt: complete",
    )
    bare = PROFILES["DE"].render(replace(facts, meter=None), None)
    assert bare.missing == ("signed meter data",) and "INCOMPLETE RECEIPT" in bare.lines
    bad = PROFILES["DE"].render(
        replace(facts, meter=replace(proof, verified=False, reason="wrong key")), None
    )
    assert (
        bad.missing == ("verified meter signature",)
        and "  signature NOT VERIFIED: wrong key" in bad.lines
    )


def test_a_terminal_without_a_printer_gets_at_most_eight_lines() -> None:
    r = PROFILES["HR"].render(FACTS, None)
    shown = PROFILES["HR"].display(r)
    assert 0 < len(shown) <= 8 and shown[0] == "Invoice EVP-s1" and "FISCAL DATA PENDING" in shown


# ---- the engine's receipt sub-machine ------------------------------------------------------

HR = policy(
    fiscal=PROFILES["HR"],
    fiscal_wait=timedelta(seconds=20),
    e_receipt_url="https://cpo.example/r/{reference}",
)
DE = policy(fiscal=PROFILES["DE"])


def run(s: Session | None, ev: e.Event, minutes: float, pol: Policy) -> Transition:
    return transition(s, ev, T0 + timedelta(minutes=minutes), pol)


def captured(pol: Policy) -> Transition:
    s = run(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol).session
    s = run(
        s,
        e.TerminalResultArrived(
            session_id=SID,
            event_id="pa",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref="7",
        ),
        0,
        pol,
    ).session
    s = run(s, e.ChargerStarted(SID, "st", 1000), 1, pol).session
    s = run(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5000), 60, pol).session
    return run(
        s,
        e.TerminalResultArrived(
            session_id=SID,
            event_id="cap",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=333,
            ref="8",
        ),
        61,
        pol,
    )


def enqueued(t: Transition, kind: str) -> list[dict[str, object]]:
    return [x.payload for x in t.commands if isinstance(x, c.Enqueue) and x.kind == kind]


def str_list(value: object) -> list[str]:
    """A payload's list of lines (payloads are JSON: typed ``object`` until looked at)."""
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), value
    return value


def printed(t: Transition) -> list[c.ShowReceipt]:
    return [x for x in t.commands if isinstance(x, c.ShowReceipt)]


def test_hr_capture_waits_for_the_signature_then_prints_it_complete() -> None:
    t = captured(HR)
    s = t.session
    assert (
        s is not None and s.state is State.RECEIPTING and s.invoice.receipt is ReceiptState.AWAITING
    )
    assert s.timer is not None and s.timer[0] == "fiscal"
    (outcome,) = enqueued(
        t, "session.outcome"
    )  # the money outcome goes up at once: the CPO invoices from it
    assert outcome["state"] == "completed" and outcome["captured_minor"] == 333 and not printed(t)
    signed = e.FiscalDataArrived(
        SID, "f1", (), "17/EVP1/1", None, (("jir", "J-1"), ("zki", "Z" * 32))
    )
    t = run(s, signed, 61.2, HR)
    s = t.session
    assert (
        s is not None
        and s.state is State.COMPLETED
        and s.invoice.receipt is ReceiptState.COMPLETE
        and s.timer is None
    )
    (shown,) = printed(t)
    assert (
        "JIR: J-1" in shown.lines
        and "Invoice 17/EVP1/1" in shown.lines
        and "Total 3.33 EUR" in shown.lines
    )
    (message,) = enqueued(t, "session.receipt")
    assert message["state"] == "complete" and "JIR: J-1" in str_list(message["lines"])
    again = run(s, replace(signed, event_id="f2"), 62, HR)
    assert again.commands == () and again.session == s  # the CPO repeating itself changes nothing


def test_hr_without_the_cpo_prints_pending_then_delivers_the_e_receipt_once() -> None:
    s = captured(HR).session
    assert s is not None and s.timer is not None
    t = run(s, e.TimerFired(SID, "t", e.TimerKind.FISCAL), 61.5, HR)
    s = t.session
    assert (
        s is not None and s.state is State.COMPLETED and s.invoice.receipt is ReceiptState.PENDING
    )
    (shown,) = printed(t)
    assert shown.lines[-3:] == (
        "FISCAL DATA PENDING",
        "missing: invoice, zki, jir",
        "e-receipt: https://cpo.example/r/EVP-s1",
    )
    assert [m["state"] for m in enqueued(t, "session.receipt")] == ["pending"]
    late = e.FiscalDataArrived(
        SID, "f1", (), "17/EVP1/1", None, (("jir", "J-1"), ("zki", "Z" * 32))
    )
    t = run(s, late, 600, HR)
    s = t.session
    assert (
        s is not None and s.invoice.receipt is ReceiptState.LATE and not printed(t)
    )  # the driver has gone
    (message,) = enqueued(t, "session.receipt")
    assert message["state"] == "delivered_late" and "JIR: J-1" in str_list(message["lines"])
    assert run(s, replace(late, event_id="f2"), 601, HR).commands == ()  # exactly once


def test_hr_a_zki_without_jir_is_printed_but_stays_pending_until_the_jir() -> None:
    s = captured(HR).session
    t = run(
        s, e.FiscalDataArrived(SID, "f1", (), "17/EVP1/1", None, (("zki", "Z" * 32),)), 61.1, HR
    )
    s = t.session
    assert (
        s is not None
        and s.invoice.receipt is ReceiptState.PENDING
        and s.invoice.receipt_missing == ("jir",)
    )
    t = run(
        s,
        e.FiscalDataArrived(SID, "f2", (), None, None, (("jir", "J-9"), ("zki", "Z" * 32))),
        300,
        HR,
    )
    assert t.session is not None and t.session.invoice.receipt is ReceiptState.LATE
    assert [m["state"] for m in enqueued(t, "session.receipt")] == ["delivered_late"]


def test_de_prints_at_capture_and_the_fac_gets_the_invoice_line() -> None:
    t = captured(DE)
    s = t.session
    assert (
        s is not None and s.state is State.COMPLETED and s.invoice.receipt is ReceiptState.PENDING
    )
    assert s.invoice.receipt_missing == ("signed meter data",)  # the simulated meter signs nothing
    (shown,) = printed(t)
    assert shown.lines[:3] == (
        "EV charging at E1",
        "Date 2026-01-05 10:01",
        "Invoice EVP-s1",
    )  # Berlin time
    assert "Net 19% 2.80 EUR" in shown.lines and "VAT 19% 0.53 EUR" in shown.lines
    (outcome,) = enqueued(t, "session.outcome")
    assert outcome["receipt"] == ["Invoice: EVP-s1"]


@pytest.mark.parametrize("pol", [HR, DE])
def test_a_display_only_terminal_gets_the_short_form(pol: Policy) -> None:
    pol = replace(pol, display_only=frozenset({"T1"}))
    t = captured(pol)
    if t.session is not None and t.session.state is State.RECEIPTING:
        t = run(t.session, e.TimerFired(SID, "t", e.TimerKind.FISCAL), 62, pol)
    (shown,) = printed(t)
    assert shown.display and 0 < len(shown.lines) <= 8
