"""A session as plain JSON for the store, and back. Rows written before holds were a list
(one ``receipt_no`` and ``authorized_minor``) still load: they become a one-hold session."""

from __future__ import annotations

from dataclasses import asdict, astuple
from datetime import datetime
from typing import Any

from gateway.fiscal.meter import SignedMeter
from gateway.fiscal.receipt import ReceiptState, VatLine
from gateway.payments.events import LastResult, TimerKind
from gateway.payments.refunds import Refund, RefundMethod, RefundStatus
from gateway.payments.session import Hold, HoldStatus, Reading, Session, State


def to_json(s: Session) -> dict[str, Any]:
    return {
        "id": s.id,
        "evse": s.evse,
        "terminal": s.terminal,
        "currency": s.currency,
        "state": s.state.value,
        "created_at": s.created_at.isoformat(),
        "hold_minor": s.hold_minor,
        "holds": [_hold_json(h) for h in s.holds],
        # The money view, derived (kept for readers of the row: CLI, reconciliation queries).
        "authorized_minor": s.authorized_minor,
        "captured_minor": s.captured_minor,
        "released_minor": s.released_minor,
        "open_minor": s.open_minor,
        "receipt_no": s.receipt_no,
        "price_minor": s.price_minor,
        "price_excl": s.price_excl,
        "owed_minor": s.owed_minor,
        "shortfall_minor": s.shortfall_minor,
        "unpaid_energy_wh": s.unpaid_energy_wh,
        "unpaid_minor": s.unpaid_minor,
        "reference": s.reference,
        "card": dict(s.card),
        "scheme": s.scheme,
        "expires_at": s.expires_at.isoformat() if s.expires_at else None,
        "meter_start_wh": s.meter_start_wh,
        "readings": [[r.at.isoformat(), r.energy_wh, r.trusted] for r in s.readings],
        "billed_energy_wh": s.billed_energy_wh,
        "reported_energy_wh": s.reported_energy_wh,
        "timer": [s.timer[0].value, s.timer[1].isoformat()] if s.timer else None,
        "attempts": s.attempts,
        "lost_results": s.lost_results,
        "held_result": list(astuple(s.held_result)) if s.held_result else None,
        "topup_refused": s.topup_refused,
        "topup_minor": s.topup_minor,
        "stop_reason": s.stop_reason,
        "notes": list(s.notes),
        "discrepancies": list(s.discrepancies),
        "fiscal": list(s.fiscal),
        "tariff_id": s.tariff_id,
        "route": s.route,
        "invoicer": s.invoicer,
        "invoice_reference": s.invoice_reference,
        "invoice_url": s.invoice_url,
        "fiscal_fields": [list(f) for f in s.fiscal_fields],
        "vat": [[v.rate, v.net_minor, v.tax_minor] for v in s.vat],
        "receipt": s.receipt.value,
        "receipt_lines": list(s.receipt_lines),
        "receipt_missing": list(s.receipt_missing),
        "receipt_upstream": list(s.receipt_upstream),
        "captured_at": s.captured_at.isoformat() if s.captured_at else None,
        "meter_records": [asdict(m) for m in s.meter_records],
        "refunds": [{**asdict(r), "at": r.at.isoformat()} for r in s.refunds],
        "refunded_minor": s.refunded_minor,
    }


def _hold_json(h: Hold) -> dict[str, Any]:
    return {
        "receipt_no": h.receipt_no,
        "amount_minor": h.amount_minor,
        "trace_no": h.trace_no,
        "target_minor": h.target_minor,
        "captured_minor": h.captured_minor,
        "released_minor": h.released_minor,
        "status": h.status.value,
        "booking_receipt": h.booking_receipt,
        "capture_sent_at": h.capture_sent_at.isoformat() if h.capture_sent_at else None,
        "uncertain": h.uncertain,
    }


def _holds(d: dict[str, Any]) -> tuple[Hold, ...]:
    if "holds" in d:
        return tuple(
            Hold(
                h["receipt_no"],
                h["amount_minor"],
                h.get("trace_no"),
                h.get("target_minor"),
                h["captured_minor"],
                h["released_minor"],
                HoldStatus(h["status"]),
                h.get("booking_receipt"),
                datetime.fromisoformat(h["capture_sent_at"]) if h.get("capture_sent_at") else None,
                h.get("uncertain", False),
            )
            for h in d["holds"]
        )
    if d.get("receipt_no") is None:
        return ()
    captured, released, held = d["captured_minor"], d["released_minor"], d["authorized_minor"]
    status = HoldStatus.OPEN
    if captured + released == held and State(d["state"]) in (State.COMPLETED, State.VOIDED):
        status = HoldStatus.CAPTURED if captured else HoldStatus.RELEASED
    elif State(d["state"]) in (State.CAPTURE_FAILED, State.RELEASE_FAILED):
        status, captured, released = HoldStatus.LAPSED, 0, 0
    return (Hold(d["receipt_no"], held, None, None, captured, released, status),)


# What a field holds when it says nothing: ``compact`` leaves such fields out of an archived
# session's row, and ``from_json`` puts them back. One table for both, so they cannot disagree.
DEFAULTS: dict[str, Any] = {
    "card": {},
    "scheme": None,
    "expires_at": None,
    "meter_start_wh": None,
    "readings": [],
    "billed_energy_wh": 0,
    "reported_energy_wh": None,
    "timer": None,
    "attempts": 0,
    "lost_results": 0,
    "held_result": None,
    "topup_refused": False,
    "topup_minor": 0,
    "stop_reason": None,
    "notes": [],
    "discrepancies": [],
    "fiscal": [],
    "tariff_id": None,
    "route": None,
    "invoicer": None,
    "invoice_reference": None,
    "invoice_url": None,
    "fiscal_fields": [],
    "vat": [],
    "receipt": "",
    "receipt_lines": [],
    "receipt_missing": [],
    "receipt_upstream": [],
    "captured_at": None,
    "meter_records": [],
    "refunds": [],
    "refunded_minor": 0,
    "open_minor": 0,
    "owed_minor": 0,
    "shortfall_minor": 0,
    "unpaid_energy_wh": 0,
    "unpaid_minor": 0,
    "price_excl": "0",
}


def compact(d: dict[str, Any]) -> dict[str, Any]:
    """An archived session's row: its meter readings dropped (priced and billed long ago; the
    full row went to the archive first) and every field that holds its default left out."""

    def said_nothing(key: str, value: Any) -> bool:
        default = DEFAULTS.get(key, ...)
        return type(value) is type(default) and value == default

    return {k: v for k, v in d.items() if k != "readings" and not said_nothing(k, v)}


def from_json(d: dict[str, Any]) -> Session:
    def when(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text) if text else None

    d = {**DEFAULTS, **d}  # a compacted row leaves fields out

    return Session(
        id=d["id"],
        evse=d["evse"],
        terminal=d["terminal"],
        currency=d["currency"],
        state=State(d["state"]),
        created_at=datetime.fromisoformat(d["created_at"]),
        hold_minor=d["hold_minor"],
        holds=_holds(d),
        price_minor=d["price_minor"],
        price_excl=d["price_excl"],
        owed_minor=d["owed_minor"],
        shortfall_minor=d["shortfall_minor"],
        unpaid_energy_wh=d["unpaid_energy_wh"],
        unpaid_minor=d["unpaid_minor"],
        reference=d["reference"],
        card=dict(d["card"]),
        scheme=d["scheme"],
        expires_at=when(d["expires_at"]),
        meter_start_wh=d["meter_start_wh"],
        readings=tuple(
            Reading(datetime.fromisoformat(at), wh, trusted) for at, wh, trusted in d["readings"]
        ),
        billed_energy_wh=d["billed_energy_wh"],
        reported_energy_wh=d["reported_energy_wh"],
        timer=(TimerKind(d["timer"][0]), datetime.fromisoformat(d["timer"][1]))
        if d["timer"]
        else None,
        attempts=d["attempts"],
        lost_results=d["lost_results"],
        held_result=LastResult(*d["held_result"]) if d["held_result"] else None,
        topup_refused=d["topup_refused"],
        topup_minor=d["topup_minor"],
        stop_reason=d["stop_reason"],
        notes=tuple(d["notes"]),
        discrepancies=tuple(d["discrepancies"]),
        fiscal=tuple(d["fiscal"]),
        tariff_id=d["tariff_id"],
        route=d["route"],
        invoicer=d["invoicer"],
        invoice_reference=d["invoice_reference"],
        invoice_url=d["invoice_url"],
        fiscal_fields=tuple((str(k), str(v)) for k, v in d["fiscal_fields"]),
        vat=tuple(VatLine(rate, net, tax) for rate, net, tax in d["vat"]),
        receipt=ReceiptState(d["receipt"]),
        receipt_lines=tuple(d["receipt_lines"]),
        receipt_missing=tuple(d["receipt_missing"]),
        receipt_upstream=tuple(d["receipt_upstream"]),
        captured_at=when(d["captured_at"]),
        meter_records=tuple(SignedMeter(**m) for m in d["meter_records"]),
        refunds=tuple(_refund(r) for r in d["refunds"]),
    )


def _refund(d: dict[str, Any]) -> Refund:
    return Refund(
        d["id"],
        d["amount_minor"],
        d["reason"],
        d["source"],
        RefundMethod(d["method"]),
        RefundStatus(d["status"]),
        datetime.fromisoformat(d["at"]),
        d.get("receipt_no"),
        d.get("message", ""),
    )
