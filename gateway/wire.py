"""OCPI's JSON types (CiString, DateTime, Number, Price) and the Tariff object.

Below both the configuration (which validates the tariffs written in a config file) and the
OCPI layer (which reads them from the CPO): neither imports the other for them. A Number is a
JSON number on the wire; a config file writes amounts as decimal strings, which it validates
with ``context={"decimal_strings": True}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    model_validator,
)


def _printable_ascii(value: str) -> str:
    if not all(32 <= ord(ch) < 127 for ch in value):
        raise ValueError("CiString allows printable ASCII only")
    return value


_ascii = AfterValidator(_printable_ascii)
# CiString(n) of the spec: printable ASCII, at most n characters ("Req": at least one).
CiString2 = Annotated[str, StringConstraints(min_length=2, max_length=2), _ascii]
CiString3 = Annotated[str, StringConstraints(max_length=3), _ascii]
CiString3Req = Annotated[str, StringConstraints(min_length=1, max_length=3), _ascii]
CiString10 = Annotated[str, StringConstraints(max_length=10), _ascii]
CiString20 = Annotated[str, StringConstraints(max_length=20), _ascii]
CiString36 = Annotated[str, StringConstraints(max_length=36), _ascii]
CiString36Req = Annotated[str, StringConstraints(min_length=1, max_length=36), _ascii]
CiString45 = Annotated[str, StringConstraints(max_length=45), _ascii]
CiString64Req = Annotated[str, StringConstraints(min_length=1, max_length=64), _ascii]
CiString255 = Annotated[str, StringConstraints(max_length=255), _ascii]
CiString255Req = Annotated[str, StringConstraints(min_length=1, max_length=255), _ascii]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("DateTime must carry a time zone (OCPI: UTC, 'Z')")
    return value.astimezone(UTC)


DateTime = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(lambda v: v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), return_type=str),
]


MAX_MAGNITUDE = Decimal(10) ** 12  # kWh, prices: far above any session; a float stays exact


def _number(value: object, info: ValidationInfo) -> object:
    """A JSON number (never a boolean; a string only from a config file), exactly as written."""
    if isinstance(value, str) and info.context and info.context.get("decimal_strings"):
        try:
            number = Decimal(value)
        except ArithmeticError:
            raise ValueError(f"not a decimal number: {value!r}") from None
        return _in_range(number, value)
    return json_number(value)


def json_number(value: object, what: str = "") -> Decimal:
    """``value`` as a Decimal if it is a finite JSON number of sane size; ValueError otherwise
    (a 401-digit integer would be stored as ``inf`` once written as a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{what}: must be a JSON number" if what else "must be a JSON number")  # noqa: TRY004
    return _in_range(value if isinstance(value, Decimal) else Decimal(str(value)), value)


def _in_range(number: Decimal, value: object) -> Decimal:
    if not number.is_finite():  # NaN and Infinity: Python's JSON reader lets them through
        raise ValueError(f"not a finite number: {value!r}")
    if abs(number) >= MAX_MAGNITUDE:
        raise ValueError(f"out of range: {len(str(value))} characters, limit {MAX_MAGNITUDE:.0e}")
    return number


Number = Annotated[
    Decimal, BeforeValidator(_number), PlainSerializer(lambda v: float(v), return_type=float)
]
Url = Annotated[str, StringConstraints(max_length=255)]


class OcpiModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class TaxAmount(OcpiModel):
    name: CiString255
    account_number: CiString255 | None = None
    percentage: Number | None = None
    amount: Number


class Price(OcpiModel):
    before_taxes: Number
    taxes: list[TaxAmount] | None = None
    after_taxes: Number | None = None  # a tariff's min/max_price bound incl. VAT (2.3.0 examples)

    @model_validator(mode="before")
    @classmethod
    def _read_221(cls, data: Any) -> Any:
        if isinstance(data, dict) and "before_taxes" not in data and "excl_vat" in data:
            excl = json_number(data["excl_vat"], "excl_vat")
            converted: dict[str, Any] = {"before_taxes": excl}
            if data.get("incl_vat") is not None:
                incl = json_number(data["incl_vat"], "incl_vat")
                converted["taxes"] = [{"name": "VAT", "amount": incl - excl}]
            return converted
        return data

    @property
    def total(self) -> Decimal:
        return self.before_taxes + sum((t.amount for t in self.taxes or ()), Decimal(0))


class TariffDimension(StrEnum):
    ENERGY = "ENERGY"
    FLAT = "FLAT"
    PARKING_TIME = "PARKING_TIME"
    TIME = "TIME"


class PriceComponentModel(OcpiModel):
    type: TariffDimension
    price: Number
    vat: Number | None = None
    step_size: Annotated[int, Field(ge=0)]


class TariffRestrictionsModel(OcpiModel):
    start_time: (
        Annotated[str, StringConstraints(pattern=r"^([0-1][0-9]|2[0-3]):[0-5][0-9]$")] | None
    ) = None
    end_time: (
        Annotated[str, StringConstraints(pattern=r"^([0-1][0-9]|2[0-3]):[0-5][0-9]$")] | None
    ) = None
    start_date: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    end_date: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    min_kwh: Number | None = None
    max_kwh: Number | None = None
    min_current: Number | None = None
    max_current: Number | None = None
    min_power: Number | None = None
    max_power: Number | None = None
    min_duration: Annotated[int, Field(ge=0)] | None = None
    max_duration: Annotated[int, Field(ge=0)] | None = None
    day_of_week: (
        list[
            Annotated[str, StringConstraints(pattern=r"^(MON|TUES|WEDNES|THURS|FRI|SATUR|SUN)DAY$")]
        ]
        | None
    ) = None
    # kept so that the pricing can leave reservation elements out (never priced as charging)
    reservation: Annotated[str, StringConstraints(pattern=r"^RESERVATION(_EXPIRES)?$")] | None = (
        None
    )


class TariffElementModel(OcpiModel):
    price_components: list[PriceComponentModel] = Field(min_length=1)
    restrictions: TariffRestrictionsModel | None = None


class OcpiTariff(OcpiModel):
    """mod_tariffs' Tariff (with the payments edition's ``preauthorize_amount``). Validated
    here, then priced by ``gateway.payments.tariff`` (plain dataclasses inside)."""

    country_code: CiString2 | None = None
    party_id: CiString3 | None = None
    id: CiString36Req
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    elements: list[TariffElementModel] = Field(min_length=1)
    min_price: Price | None = None
    max_price: Price | None = None
    preauthorize_amount: Number | None = None
    last_updated: DateTime | None = None  # required by the spec; tolerated missing in config files
    # which of a connector's tariffs applies (gateway.ocpi.tariffs.applicable): its kind and
    # validity; absent = for every session, always
    type: (
        Annotated[
            str,
            StringConstraints(pattern=r"^(AD_HOC_PAYMENT|PROFILE_(CHEAP|FAST|GREEN)|REGULAR)$"),
        ]
        | None
    ) = None
    start_date_time: DateTime | None = None
    end_date_time: DateTime | None = None
    # 2.3.0: YES = the component prices already include their ``vat`` (never added again)
    tax_included: Annotated[str, StringConstraints(pattern=r"^(YES|NO|N_A)$")] | None = None
