"""Which energy a session is billed for, and which signed meter records count.

The documented rule when sources disagree: the meter's verified signed begin and end readings
(OCMF, bound to the session); else the meter's stop reading; else the last trusted (signed)
meter value; else the charger's own session total; else the last unsigned value. A difference
above the tolerance between the billed value and the charger's total is noted for
reconciliation. After a fault or a missing stop confirmation the last trusted reading is billed.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.fiscal.meter import SignedMeter
from gateway.payments.model import BilledTo, Session, update
from gateway.payments.moves import note
from gateway.payments.policy import Policy


def record_meter(s: Session, m: SignedMeter) -> Session:
    """Keep a signed meter record once (by payload hash), with what is wrong with it noted."""
    if any(r.payload_sha256 == m.payload_sha256 for r in s.metering.meter_records):
        return s
    s = replace(s, metering=replace(s.metering, meter_records=(*s.metering.meter_records, m)))
    if not bound(s, m):
        return replace(
            s,
            discrepancies=(
                *s.discrepancies,
                f"signed meter record {m.payload_sha256[:16]} is for "
                f"transaction {m.identification!r}, not {s.reference!r}: not used"
                if m.identification
                else f"signed meter record {m.payload_sha256[:16]} without identification "
                f"(begin {m.begin_wh} Wh, end {m.end_wh} Wh) does not match the session's "
                f"start {s.metering.meter_start_wh} Wh and readings: not used",
            ),
        )
    if not m.verified:
        return update(
            s,
            notes=note(s, f"signed meter record {m.payload_sha256[:16]} not verified: {m.reason}"),
        )
    return s


BEGIN_SLACK_WH = 50  # a signed begin reading without identification may differ this much


def bound(s: Session, m: SignedMeter) -> bool:
    """A record is this session's if the meter wrote the session's authorization reference (the
    card transaction's) as its identification. A record without one could be any session's (a
    replayed old record, issue 27): it is this session's only if its begin reading is the
    session's start reading (within ``BEGIN_SLACK_WH``) and its end is not below the last trusted
    reading; anything else is a recorded discrepancy, never the billing truth."""
    if m.identification:
        return m.identification == s.reference
    start = s.metering.meter_start_wh
    if start is None or m.begin_wh is None or abs(m.begin_wh - start) > BEGIN_SLACK_WH:
        return False
    trusted = [r.energy_wh for r in s.metering.readings if r.trusted]
    last = trusted[-1] if trusted else 0
    return m.end_wh is None or m.end_wh - start >= last - BEGIN_SLACK_WH


def signed_energy(s: Session) -> int | None:
    """Energy between the verified begin and end readings of one meter, bound to the session."""
    usable = [m for m in s.metering.meter_records if m.verified and bound(s, m)]
    begins = [(m.meter, m.begin_wh) for m in usable if m.begin_wh is not None]
    ends = [(m.meter, m.end_wh) for m in usable if m.end_wh is not None]
    if not begins or not ends or begins[0][0] != ends[-1][0]:
        return None
    begin, end = begins[0][1], ends[-1][1]
    return end - begin if end >= begin else None


def meter_proof(s: Session) -> SignedMeter | None:
    """The record the receipt shows: the verified one with the end reading, else the newest."""
    records = [m for m in s.metering.meter_records if bound(s, m)]
    return next((m for m in reversed(records) if m.verified and m.end_wh is not None), None) or (
        records[-1] if records else None
    )


def billed_energy(s: Session, policy: Policy) -> tuple[int, str, tuple[str, ...]]:
    """(Wh billed, where that figure comes from, notes for reconciliation)."""
    m = s.metering
    if m.billed_to is BilledTo.LAST_TRUSTED:
        priced = m.billed_readings()
        return (priced[-1].energy_wh if priced else 0), "the last trusted reading", ()
    trusted = [r for r in m.readings if r.trusted and r.energy_wh > 0]
    if m.stop_meter_wh is not None:
        energy, source = m.stop_meter_wh - (m.meter_start_wh or 0), "the meter's stop reading"
    elif trusted:
        energy, source = trusted[-1].energy_wh, "the last trusted meter value"
    elif m.reported_energy_wh is not None:
        energy, source = m.reported_energy_wh, "the charger's session total"
    else:
        energy, source = (m.readings[-1].energy_wh if m.readings else 0), "the last meter value"
    energy = max(energy, 0)
    notes: tuple[str, ...] = ()
    signed = signed_energy(s)
    if signed is not None:
        if signed != energy:
            notes = (
                f"billed {signed} Wh from the meter's signed readings (the charger said {energy} "
                f"Wh)",
            )
        energy, source = signed, "the meter's signed begin and end readings"
    elif m.meter_records:
        notes = ("no verified signed begin and end reading: billed on the charger's meter reading",)
    reported = m.reported_energy_wh
    if reported is not None and abs(reported - energy) > policy.energy_tolerance_wh:
        notes = (
            *notes,
            f"energy disagreement: billed {energy} Wh, charger reported {reported} Wh",
        )
    return energy, source, notes
