"""The money view of a session as the store keeps it for reconciliation: one payment row per
hold and per settlement (pre-authorised, captured, released, lapsed or unconfirmed), per refund,
and what is owed. Written with every step of the session (``engine_host``)."""

from __future__ import annotations

from gateway.payments.session import HoldStatus, Session
from gateway.store import PaymentRecord


def payment_rows(s: Session) -> list[PaymentRecord]:
    """The money view of a session, one row per hold and per settlement, for reconciliation."""
    rows = []
    for h in s.holds:
        base = f"{s.id}:{h.ref}"
        detail = {
            "ref": h.ref,
            "status": h.status.value,
            "booking_ref": h.booking_ref,
        }
        rows.append(
            PaymentRecord(
                f"{base}:preauth", s.id, "preauth", "approved", h.amount_minor, s.currency, detail
            )
        )
        if h.captured_minor:
            rows.append(
                PaymentRecord(
                    f"{base}:capture", s.id, "capture", "done", h.captured_minor, s.currency, detail
                )
            )
        if h.released_minor:
            rows.append(
                PaymentRecord(
                    f"{base}:release", s.id, "release", "done", h.released_minor, s.currency, detail
                )
            )
        if h.status in (HoldStatus.LAPSED, HoldStatus.UNCONFIRMED):
            rows.append(
                PaymentRecord(
                    f"{base}:{h.status.value}",
                    s.id,
                    h.status.value,
                    "open",
                    h.open_minor,
                    s.currency,
                    detail,
                )
            )
    rows += [
        PaymentRecord(
            f"{s.id}:refund:{r.id}",
            s.id,
            r.method.value,
            r.status.value,
            r.amount_minor,
            s.currency,
            {
                "reason": r.reason,
                "source": r.source,
                "ref": r.ref,
                "message": r.message,
            },
        )
        for r in s.refunds
    ]
    if s.bill.owed_minor:
        rows.append(
            PaymentRecord(
                f"{s.id}:owed",
                s.id,
                "owed",
                "open",
                s.bill.owed_minor,
                s.currency,
                {
                    "shortfall_minor": s.bill.shortfall_minor,
                    "unpaid_energy_wh": s.bill.unpaid_energy_wh,
                },
            )
        )
    return rows
