"""The site's pricing: the hold strategy and its amounts, retries, hold validity per scheme and
the tariffs (OCPI Tariff objects, checked when loaded)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from drivers.errors import AmountError
from drivers.money import Money
from gateway.payments.tariff_ocpi import tariff_from_ocpi
from gateway.settings.fields import Amount, _Model
from gateway.settings.terminals import ValidityHours
from gateway.wire import OcpiTariff


class PricingSettings(_Model):
    strategy: Literal["fixed", "target", "incremental"] = "fixed"
    fixed_hold: dict[str, Amount] = Field(default_factory=lambda: {"EUR": Decimal("50.00")})
    hold_min: Amount = Decimal("5.00")
    hold_max: Amount = Decimal("150.00")
    target_margin_pct: Amount = Decimal(10)
    assumed_power_kw: Amount = Decimal(11)
    incremental_initial: Amount = Decimal("20.00")
    incremental_step: Amount = Decimal("20.00")
    safety_margin: Amount = Decimal("0.50")  # stop charging this far below the hold
    min_partial_approval: Amount = Decimal("5.00")
    start_timeout_s: Annotated[int, Field(gt=0)] = 180
    retry_initial_s: Annotated[int, Field(gt=0)] = 30  # capture/release retries back off from here
    retry_max_s: Annotated[int, Field(gt=0)] = 1800  # ... doubling up to this
    # How long a pre-authorisation stays valid, per card scheme ("default" for any other or
    # an unknown card): the engine stops charging and captures before it lapses.
    hold_validity_hours: ValidityHours = Field(
        default_factory=lambda: {"default": 48, "mastercard": 720, "visa": 120}
    )
    stop_before_expiry_hours: Annotated[int, Field(ge=0)] = 24
    answer_timeout_s: Annotated[int, Field(ge=30)] = (
        360  # a terminal command not answered by then is asked about
    )
    # Zero energy delivered: release the whole hold (false), or bill the tariff's flat/time parts
    # (true).
    bill_without_energy: bool = False
    default_tariff: str | None = None
    tariffs: list[dict[str, Any]] = []  # OCPI Tariff objects (mod_tariffs field names)

    @field_validator("tariffs")
    @classmethod
    def _tariffs(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for raw in v:
            try:
                OcpiTariff.model_validate(raw, context={"decimal_strings": True})
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"tariff {raw.get('id', '?')}: {where}: {first['msg']}") from None
            tariff_from_ocpi(raw)  # raises ValueError naming the tariff and field
        return v

    @field_validator("fixed_hold")
    @classmethod
    def _holds(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        for code, amount in v.items():
            try:
                held = Money.parse(str(amount), code)
            except AmountError as exc:
                raise ValueError(str(exc)) from None
            if held.minor == 0:
                raise ValueError(f"{code} hold must be positive")
        return v

    @model_validator(mode="after")
    def _clamps(self) -> PricingSettings:
        if self.hold_min > self.hold_max:
            raise ValueError("hold_min must not exceed hold_max")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must not be below retry_initial_s")
        ids = [str(t.get("id")) for t in self.tariffs]
        if self.default_tariff is not None and self.default_tariff not in ids:
            raise ValueError(
                f"default_tariff {self.default_tariff!r} is not among the tariffs {ids}"
            )
        return self
