"""OCPI 2.3.0 objects the PTP sends or reads (types, mod_payments, credentials, versions).

Field lengths, enums, CiString and DateTime rules are enforced. Unknown fields from a peer
are tolerated on input and never produced. Where the spec's own payments examples disagree
with its object tables (see the note in docs), input is lenient and output follows the table:
- Price: emitted in the 2.3.0 form (before_taxes + taxes); the 2.2.1 form (excl_vat/incl_vat)
  that the payments examples still use is read too.
- FAC.eft_data: always at least one line out; tolerated missing in (the FAILED example).
- Terminal.last_updated: always sent; tolerated missing in (the minimal example).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from gateway.wire import (  # noqa: F401 - re-exported: the OCPI layer's one place for its types
    CiString2,
    CiString3,
    CiString3Req,
    CiString10,
    CiString20,
    CiString36,
    CiString36Req,
    CiString45,
    CiString64Req,
    CiString255,
    CiString255Req,
    DateTime,
    Number,
    OcpiModel,
    OcpiTariff,
    Price,
    PriceComponentModel,
    TariffDimension,
    TariffElementModel,
    TariffRestrictionsModel,
    TaxAmount,
    Url,
)


class CaptureStatusCode(StrEnum):
    SUCCESS = "SUCCESS"
    PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
    FAILED = "FAILED"


class InvoiceCreator(StrEnum):
    CPO = "CPO"
    PTP = "PTP"


class FinancialAdviceConfirmation(OcpiModel):
    id: CiString36Req
    authorization_reference: CiString36Req
    total_costs: Price
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    eft_data: list[CiString255Req] = Field(default_factory=list)
    capture_status_code: CaptureStatusCode
    capture_status_message: CiString255 | None = None
    last_updated: DateTime

    def to_json(self) -> dict[str, Any]:
        if not self.eft_data:
            raise ValueError("a Financial Advice Confirmation needs at least one eft_data line")
        return super().to_json()


class GeoLocation(OcpiModel):
    latitude: Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,2}\.[0-9]{5,7}$")]
    longitude: Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,3}\.[0-9]{5,7}$")]


class Terminal(OcpiModel):
    terminal_id: CiString36Req
    customer_reference: CiString36 | None = None
    party_id: CiString3 | None = None
    country_code: CiString2 | None = None
    address: CiString45 | None = None
    city: CiString45 | None = None
    postal_code: CiString10 | None = None
    state: CiString20 | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    coordinates: GeoLocation | None = None
    invoice_base_url: Url | None = None
    invoice_creator: InvoiceCreator | None = None
    reference: CiString36 | None = None
    location_ids: list[CiString36] | None = None
    evse_uids: list[CiString36] | None = None
    last_updated: DateTime | None = None

    @model_validator(mode="after")
    def _party_pair(self) -> Terminal:
        if (self.party_id is None) != (self.country_code is None):
            raise ValueError("party_id and country_code go together (both or neither)")
        return self


class TerminalActivation(Terminal):
    """POST …/terminals/activate: the CPO names the terminal by its ``reference`` (e.g. the OEM's
    serial number); ``terminal_id`` is the PTP's to assign, so it may be absent."""

    terminal_id: CiString36 | None = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _named(self) -> TerminalActivation:
        if not self.terminal_id and not self.reference:
            raise ValueError("give the terminal's reference (or its terminal_id)")
        return self


class TerminalPatch(OcpiModel):
    """PATCH/PUT bodies from the CPO: any subset of Terminal's fields."""

    customer_reference: CiString36 | None = None
    party_id: CiString3 | None = None
    country_code: CiString2 | None = None
    invoice_base_url: Url | None = None
    invoice_creator: InvoiceCreator | None = None
    location_ids: list[CiString36] | None = None
    evse_uids: list[CiString36] | None = None
    last_updated: DateTime | None = None


class Version(OcpiModel):
    version: Annotated[str, StringConstraints(max_length=10)]
    url: Url


class Endpoint(OcpiModel):
    identifier: Annotated[str, StringConstraints(max_length=255)]
    role: Annotated[str, StringConstraints(pattern=r"^(SENDER|RECEIVER)$")]
    url: Url


class VersionDetails(OcpiModel):
    version: Annotated[str, StringConstraints(max_length=10)]
    endpoints: list[Endpoint]

    def url(self, identifier: str, role: str) -> str | None:
        return next(
            (e.url for e in self.endpoints if e.identifier == identifier and e.role == role), None
        )


class BusinessDetails(OcpiModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    website: Url | None = None


class CredentialsRole(OcpiModel):
    role: Annotated[str, StringConstraints(max_length=10)]  # OTHER for a PTP (Role has no PTP)
    business_details: BusinessDetails
    party_id: CiString3Req
    country_code: CiString2


class Credentials(OcpiModel):
    token: CiString64Req
    url: Url
    roles: list[CredentialsRole] = Field(min_length=1)


T = TypeVar("T")


class Envelope(OcpiModel, Generic[T]):
    data: T | None = None
    status_code: Annotated[int, Field(ge=1000, le=4999)]
    status_message: Annotated[str, StringConstraints(max_length=255)] | None = None
    timestamp: DateTime

    @field_validator("status_code")
    @classmethod
    def _known_class(cls, v: int) -> int:
        if v // 1000 not in (1, 2, 3, 4):
            raise ValueError("status_code must be 1xxx, 2xxx, 3xxx or 4xxx")
        return v


def envelope(
    data: Any = None, status_code: int = 1000, message: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status_code": status_code,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if data is not None:
        body["data"] = data
    if message:
        body["status_message"] = message
    return body


# ---- Commands, Sessions, CDRs: what the standard payments flow exchanges ---------------------


class TokenType(StrEnum):
    AD_HOC_USER = "AD_HOC_USER"
    APP_USER = "APP_USER"
    OTHER = "OTHER"
    RFID = "RFID"


class Token(OcpiModel):
    """The PTP's own one-time token for a StartSession (D11: AD_HOC_USER, whitelist NEVER)."""

    country_code: CiString2
    party_id: CiString3Req
    uid: CiString36Req
    type: TokenType
    contract_id: CiString36Req
    issuer: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    valid: bool
    whitelist: Annotated[
        str, StringConstraints(pattern=r"^(ALWAYS|ALLOWED|ALLOWED_OFFLINE|NEVER)$")
    ]
    last_updated: DateTime


class StartSession(OcpiModel):
    response_url: Url
    token: Token
    location_id: CiString36Req
    evse_uid: CiString36 | None = None
    authorization_reference: CiString36 | None = None


class StopSession(OcpiModel):
    response_url: Url
    session_id: CiString36Req


class CommandResponse(OcpiModel):
    result: Annotated[
        str, StringConstraints(pattern=r"^(NOT_SUPPORTED|REJECTED|ACCEPTED|UNKNOWN_SESSION)$")
    ]
    timeout: Annotated[int, Field(ge=0)]


class CommandResult(OcpiModel):
    result: Annotated[
        str, StringConstraints(max_length=32)
    ]  # ACCEPTED, REJECTED, EVSE_OCCUPIED, FAILED, ...


class SessionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    INVALID = "INVALID"
    PENDING = "PENDING"
    RESERVATION = "RESERVATION"


class OcpiSession(OcpiModel):
    """The parts of mod_sessions' Session the PTP reads."""

    country_code: CiString2
    party_id: CiString3Req
    id: CiString36Req
    start_date_time: DateTime
    end_date_time: DateTime | None = None
    kwh: Number
    authorization_reference: CiString36 | None = None
    location_id: CiString36Req
    evse_uid: CiString36Req
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    status: SessionStatus
    last_updated: DateTime


class OcpiSessionPatch(OcpiModel):
    kwh: Number | None = None
    status: SessionStatus | None = None
    end_date_time: DateTime | None = None
    last_updated: DateTime


class Cdr(OcpiModel):
    """The parts of mod_cdrs' CDR the PTP reads; ``invoice_reference_id`` set = the CPO invoices."""

    country_code: CiString2
    party_id: CiString3Req
    id: Annotated[str, StringConstraints(min_length=1, max_length=39)]
    start_date_time: DateTime
    end_date_time: DateTime
    session_id: CiString36 | None = None
    authorization_reference: CiString36 | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    total_cost: Price
    total_energy: Number
    invoice_reference_id: CiString36 | None = None
    last_updated: DateTime


class Connector(OcpiModel):
    id: CiString36Req
    tariff_ids: list[CiString36] | None = None


class Evse(OcpiModel):
    uid: CiString36Req
    connectors: list[Connector] = Field(default_factory=list)


class Location(OcpiModel):
    """The parts of mod_locations' Location the PTP reads: which tariff applies at which EVSE."""

    country_code: CiString2
    party_id: CiString3Req
    id: CiString36Req
    evses: list[Evse] | None = None
    last_updated: DateTime


class FiscalData(OcpiModel):
    """Custom module DEEVPfiscal: the CPO's invoicing data for a session — free receipt lines,
    its invoice (reference, URL) and, where the country signs each receipt, the signature fields
    by name (HR: ``zki``, ``jir``, ``issued_at``). Never required of a CPO."""

    lines: list[Annotated[str, StringConstraints(max_length=255)]] = Field(
        default_factory=list, max_length=60
    )
    invoice_reference_id: CiString36 | None = None
    invoice_url: Url | None = None
    fields: (
        dict[
            Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")],
            Annotated[str, StringConstraints(min_length=1, max_length=255)],
        ]
        | None
    ) = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _something(self) -> FiscalData:
        if not (self.lines or self.invoice_reference_id or self.invoice_url or self.fields):
            raise ValueError("fiscal data needs lines, an invoice or fiscal fields")
        return self
