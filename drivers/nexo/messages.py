"""The nexo bodies the driver sends and the POI answers, each bound to its XSD type.

``BODIES`` maps the body element name (``PaymentRequest``) to its class and category; the codecs
refuse any other body, so a POI answering with something we did not ask for is a typed error.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from drivers.nexo.binding import Extra, extras, nx
from drivers.nexo.model import (
    AmountsReq,
    AmountsResp,
    GlobalStatus,
    MessageCategory,
    MessageHeader,
    MessageReference,
    OriginalPOITransaction,
    OutputContent,
    PaymentInstrumentData,
    PaymentReceipt,
    PaymentType,
    POIData,
    Response,
    ReversalReason,
    SaleData,
    TransactionIdentification,
)


@dataclass(frozen=True, slots=True)
class SaleSoftware:
    application_name: str = nx("ApplicationName")
    software_version: str = nx("SoftwareVersion")
    # Mandatory in the XSD; Adyen's JSON names it ManufacturerID (kept in ``extra``).
    provider_identification: str | None = nx("ProviderIdentification", default=None)
    certification_code: str | None = nx("CertificationCode", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class SaleTerminalData:
    sale_capabilities: tuple[str, ...] = nx("SaleCapabilities", "listtext", ())
    terminal_environment: str | None = nx("TerminalEnvironment", default=None)
    totals_group_id: str | None = nx("TotalsGroupID", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class LoginRequest:
    date_time: str = nx("DateTime", "text")
    sale_software: SaleSoftware = nx("SaleSoftware", "elem")
    operator_language: str = nx("OperatorLanguage")
    sale_terminal_data: SaleTerminalData | None = nx("SaleTerminalData", "elem", None)
    training_mode_flag: bool | None = nx("TrainingModeFlag", default=None)
    operator_id: str | None = nx("OperatorID", default=None)
    shift_number: str | None = nx("ShiftNumber", default=None)
    poi_serial_number: str | None = nx("POISerialNumber", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class LoginResponse:
    response: Response = nx("Response", "elem")
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    maintenance_allowed: bool | None = nx("MaintenanceAllowed", default=None)


@dataclass(frozen=True, slots=True)
class LogoutResponse:
    response: Response = nx("Response", "elem")


@dataclass(frozen=True, slots=True)
class DiagnosisRequest:
    poi_id: str | None = nx("POIID", default=None)
    host_diagnosis_flag: bool | None = nx("HostDiagnosisFlag", default=None)


@dataclass(frozen=True, slots=True)
class POIStatus:
    global_status: GlobalStatus = nx("GlobalStatus")
    card_reader_ok_flag: bool | None = nx("CardReaderOKFlag", default=None)
    communication_ok_flag: bool | None = nx("CommunicationOKFlag", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class DiagnosisResponse:
    response: Response = nx("Response", "elem")
    logged_sale_id: tuple[str, ...] = nx("LoggedSaleID", "texts", ())
    poi_status: POIStatus | None = nx("POIStatus", "elem", None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class CardAcquisitionTransaction:
    total_amount: Decimal | None = nx("TotalAmount", default=None)
    payment_type: PaymentType | None = nx("PaymentType", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class CardAcquisitionRequest:
    sale_data: SaleData = nx("SaleData", "elem")
    card_acquisition_transaction: CardAcquisitionTransaction = nx(
        "CardAcquisitionTransaction", "elem"
    )
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class CardAcquisitionResponse:
    response: Response = nx("Response", "elem")
    sale_data: SaleData = nx("SaleData", "elem")
    poi_data: POIData = nx("POIData", "elem")
    payment_brand: tuple[str, ...] = nx("PaymentBrand", "texts", ())
    payment_instrument_data: PaymentInstrumentData | None = nx(
        "PaymentInstrumentData", "elem", None
    )
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class PaymentTransaction:
    amounts_req: AmountsReq = nx("AmountsReq", "elem")
    original_poi_transaction: OriginalPOITransaction | None = nx(
        "OriginalPOITransaction", "elem", None
    )
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class PaymentData:
    card_acquisition_reference: TransactionIdentification | None = nx(
        "CardAcquisitionReference", "elem", None
    )
    payment_type: PaymentType | None = nx("PaymentType", default=None)  # absent means Normal
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    sale_data: SaleData = nx("SaleData", "elem")
    payment_transaction: PaymentTransaction = nx("PaymentTransaction", "elem")
    payment_data: PaymentData | None = nx("PaymentData", "elem", None)
    extra: tuple[Extra, ...] = extras()

    @property
    def payment_type(self) -> PaymentType:
        pd = self.payment_data
        return pd.payment_type if pd and pd.payment_type else PaymentType.NORMAL


@dataclass(frozen=True, slots=True)
class PaymentResult:
    payment_instrument_data: PaymentInstrumentData | None = nx(
        "PaymentInstrumentData", "elem", None
    )
    amounts_resp: AmountsResp | None = nx("AmountsResp", "elem", None)
    payment_type: PaymentType | None = nx("PaymentType", default=None)
    online_flag: bool | None = nx("OnlineFlag", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class PaymentResponse:
    response: Response = nx("Response", "elem")
    sale_data: SaleData = nx("SaleData", "elem")
    poi_data: POIData = nx("POIData", "elem")
    payment_result: PaymentResult | None = nx("PaymentResult", "elem", None)
    payment_receipt: tuple[PaymentReceipt, ...] = nx("PaymentReceipt", "elems", ())
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    original_poi_transaction: OriginalPOITransaction = nx("OriginalPOITransaction", "elem")
    reversal_reason: ReversalReason = nx("ReversalReason")
    reversed_amount: Decimal | None = nx("ReversedAmount", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class ReversalResponse:
    response: Response = nx("Response", "elem")
    poi_data: POIData | None = nx("POIData", "elem", None)
    payment_receipt: tuple[PaymentReceipt, ...] = nx("PaymentReceipt", "elems", ())
    reversed_amount: Decimal | None = nx("ReversedAmount", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class TransactionStatusRequest:
    message_reference: MessageReference | None = nx("MessageReference", "elem", None)


@dataclass(frozen=True, slots=True)
class RepeatedMessageResponse:
    message_header: MessageHeader = nx("MessageHeader", "elem")
    payment_response: PaymentResponse | None = nx("PaymentResponse", "elem", None)
    reversal_response: ReversalResponse | None = nx("ReversalResponse", "elem", None)
    card_acquisition_response: CardAcquisitionResponse | None = nx(
        "CardAcquisitionResponse", "elem", None
    )
    extra: tuple[Extra, ...] = extras()

    @property
    def body(self) -> PaymentResponse | ReversalResponse | CardAcquisitionResponse | None:
        return self.payment_response or self.reversal_response or self.card_acquisition_response


@dataclass(frozen=True, slots=True)
class TransactionStatusResponse:
    response: Response = nx("Response", "elem")
    message_reference: MessageReference | None = nx("MessageReference", "elem", None)
    repeated_message_response: RepeatedMessageResponse | None = nx(
        "RepeatedMessageResponse", "elem", None
    )
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class ReconciliationRequest:
    reconciliation_type: str = nx("ReconciliationType")
    poi_reconciliation_id: str | None = nx("POIReconciliationID", default=None)


@dataclass(frozen=True, slots=True)
class PaymentTotals:
    transaction_type: str = nx("TransactionType")
    transaction_count: int = nx("TransactionCount")
    transaction_amount: Decimal = nx("TransactionAmount")


@dataclass(frozen=True, slots=True)
class TransactionTotals:
    payment_instrument_type: str = nx("PaymentInstrumentType")
    payment_totals: tuple[PaymentTotals, ...] = nx("PaymentTotals", "elems", ())
    card_brand: str | None = nx("CardBrand", default=None)
    payment_currency: str | None = nx("PaymentCurrency", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class ReconciliationResponse:
    response: Response = nx("Response", "elem")
    reconciliation_type: str = nx("ReconciliationType")
    transaction_totals: tuple[TransactionTotals, ...] = nx("TransactionTotals", "elems", ())
    poi_reconciliation_id: str | None = nx("POIReconciliationID", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class DisplayOutput:
    output_content: OutputContent = nx("OutputContent", "elem")
    device: str = nx("Device")
    info_qualify: str = nx("InfoQualify")
    response_required_flag: bool | None = nx("ResponseRequiredFlag", default=None)
    minimum_display_time: int | None = nx("MinimumDisplayTime", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class AbortRequest:
    message_reference: MessageReference = nx("MessageReference", "elem")
    abort_reason: str = nx("AbortReason", "text")
    display_output: DisplayOutput | None = nx("DisplayOutput", "elem", None)


@dataclass(frozen=True, slots=True)
class DisplayRequest:
    display_output: tuple[DisplayOutput, ...] = nx("DisplayOutput", "elems")


@dataclass(frozen=True, slots=True)
class OutputResult:
    response: Response = nx("Response", "elem")
    device: str = nx("Device")
    info_qualify: str = nx("InfoQualify")


@dataclass(frozen=True, slots=True)
class DisplayResponse:
    output_result: tuple[OutputResult, ...] = nx("OutputResult", "elems")


@dataclass(frozen=True, slots=True)
class PrintOutput:
    output_content: OutputContent = nx("OutputContent", "elem")
    document_qualifier: str = nx("DocumentQualifier")
    response_mode: str = nx("ResponseMode")


@dataclass(frozen=True, slots=True)
class PrintRequest:
    print_output: PrintOutput = nx("PrintOutput", "elem")


@dataclass(frozen=True, slots=True)
class PrintResponse:
    response: Response = nx("Response", "elem")
    document_qualifier: str = nx("DocumentQualifier")


@dataclass(frozen=True, slots=True)
class EventNotification:
    """The POI telling the sale system something (MessageType Notification; no answer)."""

    time_stamp: str = nx("TimeStamp")
    event_to_notify: str = nx("EventToNotify")
    event_details: str | None = nx("EventDetails", "text", default=None)
    maintenance_required_flag: bool | None = nx("MaintenanceRequiredFlag", default=None)
    extra: tuple[Extra, ...] = extras()


Body = (
    LoginRequest
    | LoginResponse
    | LogoutRequest
    | LogoutResponse
    | DiagnosisRequest
    | DiagnosisResponse
    | CardAcquisitionRequest
    | CardAcquisitionResponse
    | PaymentRequest
    | PaymentResponse
    | ReversalRequest
    | ReversalResponse
    | TransactionStatusRequest
    | TransactionStatusResponse
    | ReconciliationRequest
    | ReconciliationResponse
    | AbortRequest
    | DisplayRequest
    | DisplayResponse
    | PrintRequest
    | PrintResponse
    | EventNotification
)

# body element name -> (class, category); the header's MessageCategory must match.
BODIES: dict[str, tuple[type[Body], MessageCategory]] = {
    cls.__name__: (cls, cat)
    for cls, cat in (
        (LoginRequest, MessageCategory.LOGIN),
        (LoginResponse, MessageCategory.LOGIN),
        (LogoutRequest, MessageCategory.LOGOUT),
        (LogoutResponse, MessageCategory.LOGOUT),
        (DiagnosisRequest, MessageCategory.DIAGNOSIS),
        (DiagnosisResponse, MessageCategory.DIAGNOSIS),
        (CardAcquisitionRequest, MessageCategory.CARD_ACQUISITION),
        (CardAcquisitionResponse, MessageCategory.CARD_ACQUISITION),
        (PaymentRequest, MessageCategory.PAYMENT),
        (PaymentResponse, MessageCategory.PAYMENT),
        (ReversalRequest, MessageCategory.REVERSAL),
        (ReversalResponse, MessageCategory.REVERSAL),
        (TransactionStatusRequest, MessageCategory.TRANSACTION_STATUS),
        (TransactionStatusResponse, MessageCategory.TRANSACTION_STATUS),
        (ReconciliationRequest, MessageCategory.RECONCILIATION),
        (ReconciliationResponse, MessageCategory.RECONCILIATION),
        (AbortRequest, MessageCategory.ABORT),
        (DisplayRequest, MessageCategory.DISPLAY),
        (DisplayResponse, MessageCategory.DISPLAY),
        (PrintRequest, MessageCategory.PRINT),
        (PrintResponse, MessageCategory.PRINT),
        (EventNotification, MessageCategory.EVENT),
    )
}


@dataclass(frozen=True, slots=True)
class Message:
    """``SaleToPOIRequest`` or ``SaleToPOIResponse``: one header, one body."""

    header: MessageHeader
    body: Body

    @property
    def is_request(self) -> bool:
        return is_request_body(type(self.body).__name__)

    @property
    def root(self) -> str:
        return "SaleToPOIRequest" if self.is_request else "SaleToPOIResponse"


def is_request_body(name: str) -> bool:
    """Requests and notifications travel in ``SaleToPOIRequest``; responses in the other."""
    return not name.endswith("Response")
