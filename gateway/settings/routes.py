"""Which acquirer route takes a payment (BIN, brand, country, EVSE) and when a terminal fails
over to the next."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.settings.fields import Amount, Identifier, _Model

BinRange = Annotated[
    str, Field(pattern=r"^\d{6}(-\d{6})?$", description='a BIN "412345" or a range "400000-499999"')
]


class RouteSettings(_Model):
    """An acquirer profile and when it is used (gateway/payments/routing.py): the first route
    whose conditions all match takes the payment, on its first healthy terminal."""

    id: Identifier
    terminals: list[Identifier] = Field(
        min_length=1, description="in order of preference: the first healthy one"
    )
    evses: list[str] = []  # empty: every EVSE
    countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = []
    brands: list[Literal["girocard", "jcb", "mastercard", "amex", "visa", "diners", "other"]] = []
    bins: list[BinRange] = []
    tariff: str | None = (
        None  # the tariff its payments are priced with (its currency must be the route's)
    )
    strategy: Literal["fixed", "target", "incremental"] | None = (
        None  # overrides [pricing] for this route
    )
    fixed_hold: dict[str, Amount] | None = None
    hold_min: Amount | None = None
    hold_max: Amount | None = None
    # The incremental strategy's first hold and each top-up, in the route's currency (the
    # [pricing] amounts are the site's currency: 20.00 EUR is not 2000 yen).
    incremental_initial: Amount | None = None
    incremental_step: Amount | None = None
    # [pricing] safety_margin and min_partial_approval for this route, in its currency (required
    # when that is not the site's: 0.50 EUR is not 50 yen)
    safety_margin: Amount | None = None
    min_partial_approval: Amount | None = None

    @field_validator("bins")
    @classmethod
    def _bins(cls, v: list[str]) -> list[str]:
        for text in v:
            lo, _, hi = text.partition("-")
            if hi and int(hi) < int(lo):
                raise ValueError(f"BIN range {text!r} ends before it starts")
        return v


class RoutingSettings(_Model):
    failover_after: Annotated[int, Field(ge=1, le=100)] = 3  # consecutive technical failures
    probe_every_s: Annotated[float, Field(ge=1, le=3600)] = (
        60.0  # a terminal that is out is asked this often
    )
