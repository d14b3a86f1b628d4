"""A CPO's CDR as the charger link reads it, for the tests of first CDRs and corrections."""

from __future__ import annotations

from typing import Any

from gateway.ocpi.models import Cdr


def cdr(
    cdr_id: str,
    before: str,
    *,
    reference: str = "EVP-s1",
    currency: str = "EUR",
    vat: str | None = None,
    **fields: Any,
) -> Cdr:
    """One hour on 2026-01-05 from 08:00 UTC, 6 kWh, ``before`` taxes (plus ``vat`` as the VAT
    amount when given) in ``currency``, for the session whose authorization is ``reference``;
    ``fields`` add or replace the CDR's other fields."""
    total: dict[str, Any] = {"before_taxes": before}
    if vat is not None:
        total["taxes"] = [{"name": "VAT", "amount": vat}]
    return Cdr.model_validate(
        {
            "country_code": "DE",
            "party_id": "CPO",
            "id": cdr_id,
            "start_date_time": "2026-01-05T08:00:00Z",
            "end_date_time": "2026-01-05T09:00:00Z",
            "authorization_reference": reference,
            "currency": currency,
            "total_cost": total,
            "total_energy": 6,
            "last_updated": "2026-01-05T09:00:00Z",
            **fields,
        },
        context={"decimal_strings": True},
    )
