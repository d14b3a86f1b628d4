"""Signed meter records in the engine: verified begin/end readings are the billed energy; a
missing, invalid or foreign record is recorded and the documented fallback applies; the same
record twice is kept once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.base import Outcome
from gateway.fiscal.meter import check
from gateway.fiscal.ocmf import ocmf_time, signed_record
from gateway.fiscal.profiles import PROFILES
from gateway.fiscal.receipt import ReceiptState
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.charger import ChargeStopped, MeterRead
from gateway.payments.session import Policy, Session, State, Transition, transition
from tests.payments.fixtures import T0, policy

SID = "s1"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
DE = policy(fiscal=PROFILES["DE"])


def record(
    begin_wh: int, end_wh: int, ident: str = "EVP-s1", key: ec.EllipticCurvePrivateKey = KEY
) -> str:
    at = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    payload = {
        "FV": "1.0",
        "GI": "TEST",
        "MS": "EMH-42",
        "IS": True,
        "ID": ident,
        "RD": [
            {"TM": ocmf_time(at), "TX": "B", "RV": begin_wh / 1000, "RU": "kWh", "ST": "G"},
            {
                "TM": ocmf_time(at + timedelta(hours=1)),
                "TX": "E",
                "RV": end_wh / 1000,
                "RU": "kWh",
                "ST": "G",
            },
        ],
    }
    return signed_record(payload, key)


def run(s: Session | None, ev: e.Event, minutes: float, pol: Policy = DE) -> Transition:
    return transition(s, ev, T0 + timedelta(minutes=minutes), pol)


def charging() -> Session:
    s = run(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0).session
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
    ).session
    s = run(s, e.ChargerStarted(SID, "st", 1000), 1).session
    assert s is not None
    return s


def test_check_reads_verifies_and_never_raises() -> None:
    good = check(record(1000, 5000), PUBLIC.hex())
    assert good.verified and (good.meter, good.begin_wh, good.end_wh, good.identification) == (
        "EMH-42",
        1000,
        5000,
        "EVP-s1",
    )
    assert not check(record(1000, 5000), None).verified
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong = check(
        record(1000, 5000),
        other.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ).hex(),
    )
    assert not wrong.verified and "does not match" in wrong.reason
    junk = check("OCMF|{", PUBLIC.hex())
    assert not junk.verified and junk.reason.startswith("unreadable")


def test_verified_readings_are_billed_and_printed() -> None:
    """The charger says 4000 Wh, the signed meter 3500 Wh: the signed readings are billed."""
    signed = check(record(1000, 4500), PUBLIC.hex())
    stopped = run(
        charging(),
        e.ChargerStopped(
            session_id=SID, event_id="sp", meter_wh=5000, session_energy_wh=4000, signed=signed
        ),
        60,
    )
    s = stopped.session
    assert s is not None and s.metering.billed_energy_wh == 3500 and s.state is State.CAPTURING
    assert any("3500 Wh from the meter's signed readings" in n for n in s.notes)
    t = run(
        s,
        e.TerminalResultArrived(
            session_id=SID,
            event_id="cap",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=s.bill.price_minor,
            ref="8",
        ),
        61,
    )
    done = t.session
    assert done is not None and done.invoice.receipt is ReceiptState.COMPLETE
    (shown,) = [x for x in t.commands if isinstance(x, c.ShowReceipt)]
    assert "  meter EMH-42" in shown.lines and "  signature verified" in shown.lines
    assert "  start 1000 Wh, stop 4500 Wh" in shown.lines and "Energy 3.500 kWh" in shown.lines


def test_an_invalid_signature_falls_back_to_the_chargers_reading_and_says_so() -> None:
    forged = check(record(1000, 2000, key=ec.generate_private_key(ec.SECP256R1())), PUBLIC.hex())
    s = run(
        charging(),
        e.ChargerStopped(
            session_id=SID, event_id="sp", meter_wh=5000, session_energy_wh=4000, signed=forged
        ),
        60,
    ).session
    assert s is not None and s.metering.billed_energy_wh == 4000
    assert any("not verified" in n for n in s.notes)
    assert any("billed on the charger's meter reading" in n for n in s.notes)
    t = run(
        s,
        e.TerminalResultArrived(
            session_id=SID,
            event_id="cap",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=s.bill.price_minor,
            ref="8",
        ),
        61,
    )
    assert t.session is not None and t.session.invoice.receipt_missing == (
        "verified meter signature",
    )


def test_a_record_for_another_transaction_is_not_used_and_a_repeat_is_kept_once() -> None:
    foreign = check(record(0, 90_000, ident="EVP-someone-else"), PUBLIC.hex())
    s = run(charging(), e.MeterValue(SID, "m1", 2000, signed=foreign), 10).session
    s = run(s, e.MeterValue(SID, "m2", 3000, signed=foreign), 20).session
    assert s is not None and len(s.metering.meter_records) == 1
    assert any("not 'EVP-s1': not used" in d for d in s.discrepancies)
    s = run(
        s,
        e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=5000, session_energy_wh=4000),
        60,
    ).session
    assert s is not None and s.metering.billed_energy_wh == 4000


def test_the_mqtt_contract_carries_the_record_byte_exact_to_the_engine() -> None:
    from firmware_bridge import contract as m
    from gateway.runtime.mqtt_charger import charger_event

    text = record(1000, 4500)
    stopped = m.Stopped.model_validate_json(
        json.dumps({"id": "m1", "session_id": SID, "meter_wh": 4500, "signed": text})
    )
    meter = m.Meter.model_validate_json(
        json.dumps({"id": "m2", "session_id": SID, "seq": 1, "meter_wh": 2000, "signed": text})
    )
    for message in (stopped, meter):
        event = charger_event("E1", message)
        assert isinstance(event, ChargeStopped | MeterRead) and event.signed == text
