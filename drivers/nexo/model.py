"""The nexo message model: the envelope, the header and the types every body shares.

Names follow the nexo XSD (``nexoSaleToPOIMessages.xsd``); Python fields are snake_case and
``nx()`` carries the nexo name. Amounts are ``Decimal`` in major units as nexo writes them
(``SimpleAmountType``): exact, never float; the adapter converts to ``Money`` minor units.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from drivers.nexo.binding import Extra, extras, nx
from drivers.nexo.errors import NexoFormatError


class MessageClass(StrEnum):
    SERVICE = "Service"
    DEVICE = "Device"
    EVENT = "Event"


class MessageType(StrEnum):
    REQUEST = "Request"
    RESPONSE = "Response"
    NOTIFICATION = "Notification"


class MessageCategory(StrEnum):
    ABORT = "Abort"
    CARD_ACQUISITION = "CardAcquisition"
    DIAGNOSIS = "Diagnosis"
    DISPLAY = "Display"
    EVENT = "Event"
    LOGIN = "Login"
    LOGOUT = "Logout"
    PAYMENT = "Payment"
    PRINT = "Print"
    RECONCILIATION = "Reconciliation"
    REVERSAL = "Reversal"
    TRANSACTION_STATUS = "TransactionStatus"


class PaymentType(StrEnum):
    NORMAL = "Normal"
    REFUND = "Refund"
    ONE_TIME_RESERVATION = "OneTimeReservation"
    FIRST_RESERVATION = "FirstReservation"
    UPDATE_RESERVATION = "UpdateReservation"
    COMPLETION = "Completion"


class Result(StrEnum):
    SUCCESS = "Success"
    FAILURE = "Failure"
    PARTIAL = "Partial"


class ErrorCondition(StrEnum):
    ABORTED = "Aborted"
    BUSY = "Busy"
    CANCEL = "Cancel"
    DEVICE_OUT = "DeviceOut"
    INSERTED_CARD = "InsertedCard"
    IN_PROGRESS = "InProgress"
    LOGGED_OUT = "LoggedOut"
    MESSAGE_FORMAT = "MessageFormat"
    NOT_ALLOWED = "NotAllowed"
    NOT_FOUND = "NotFound"
    PAYMENT_RESTRICTION = "PaymentRestriction"
    REFUSAL = "Refusal"
    UNAVAILABLE_DEVICE = "UnavailableDevice"
    UNAVAILABLE_SERVICE = "UnavailableService"
    INVALID_CARD = "InvalidCard"
    UNREACHABLE_HOST = "UnreachableHost"
    WRONG_PIN = "WrongPIN"


class ReversalReason(StrEnum):
    CUST_CANCEL = "CustCancel"
    MERCHANT_CANCEL = "MerchantCancel"
    MALFUNCTION = "Malfunction"
    UNABLE_TO_COMPLETE = "Unable2Compl"


class GlobalStatus(StrEnum):
    OK = "OK"
    BUSY = "Busy"
    MAINTENANCE = "Maintenance"
    UNREACHABLE = "Unreachable"


@dataclass(frozen=True, slots=True)
class MessageHeader:
    message_class: MessageClass = nx("MessageClass")
    message_category: MessageCategory = nx("MessageCategory")
    message_type: MessageType = nx("MessageType")
    sale_id: str = nx("SaleID")
    poi_id: str = nx("POIID")
    protocol_version: str | None = nx("ProtocolVersion", default=None)
    service_id: str | None = nx("ServiceID", default=None)
    device_id: str | None = nx("DeviceID", default=None)
    extra: tuple[Extra, ...] = extras()

    def __post_init__(self) -> None:
        for name, value in (("ServiceID", self.service_id), ("DeviceID", self.device_id)):
            if value is not None and not 1 <= len(value) <= 10:
                raise NexoFormatError("MessageHeader", f"{name} {value!r} is not 1..10 characters")


@dataclass(frozen=True, slots=True)
class Response:
    result: Result = nx("Result")
    error_condition: ErrorCondition | None = nx("ErrorCondition", default=None)
    additional_response: str | None = nx("AdditionalResponse", "text", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class TransactionIdentification:
    transaction_id: str = nx("TransactionID")
    time_stamp: str = nx("TimeStamp")  # ISO date-time with zone, kept as the peer wrote it

    def __post_init__(self) -> None:
        # A POI transaction is a hold's reference, ``TransactionID@TimeStamp`` split at its last
        # "@" (results.poi_ref): an empty id or an "@" in the time stamp (never in an ISO
        # date-time) would name another transaction, or none we could capture or release.
        if not self.transaction_id or not self.time_stamp or "@" in self.time_stamp:
            raise NexoFormatError(
                "TransactionIdentification",
                f"TransactionID {self.transaction_id[:40]!r} / TimeStamp "
                f"{self.time_stamp[:40]!r}: an empty id or a time stamp with '@'",
            )


@dataclass(frozen=True, slots=True)
class MessageReference:
    message_category: MessageCategory | None = nx("MessageCategory", default=None)
    service_id: str | None = nx("ServiceID", default=None)
    device_id: str | None = nx("DeviceID", default=None)
    sale_id: str | None = nx("SaleID", default=None)
    poi_id: str | None = nx("POIID", default=None)


@dataclass(frozen=True, slots=True)
class SaleData:
    sale_transaction_id: TransactionIdentification = nx("SaleTransactionID", "elem")
    sale_to_acquirer_data: str | None = nx("SaleToAcquirerData", "text", default=None)
    operator_id: str | None = nx("OperatorID", default=None)
    sale_reference_id: str | None = nx("SaleReferenceID", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class POIData:
    poi_transaction_id: TransactionIdentification = nx("POITransactionID", "elem")
    poi_reconciliation_id: str | None = nx("POIReconciliationID", default=None)


@dataclass(frozen=True, slots=True)
class OriginalPOITransaction:
    poi_transaction_id: TransactionIdentification | None = nx("POITransactionID", "elem", None)
    approval_code: str | None = nx("ApprovalCode", "text", default=None)
    sale_id: str | None = nx("SaleID", default=None)
    poi_id: str | None = nx("POIID", default=None)
    reuse_card_data_flag: bool | None = nx("ReuseCardDataFlag", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class OutputText:
    text: str = nx("Text", "content")
    character_style: str | None = nx("CharacterStyle", default=None)
    alignment: str | None = nx("Alignment", default=None)
    end_of_line_flag: bool | None = nx("EndOfLineFlag", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class OutputContent:
    output_format: str = nx("OutputFormat")
    output_text: tuple[OutputText, ...] = nx("OutputText", "elems", ())
    extra: tuple[Extra, ...] = extras()

    @classmethod
    def of_lines(cls, lines: tuple[str, ...]) -> OutputContent:
        return cls("Text", tuple(OutputText(line, end_of_line_flag=True) for line in lines))

    def lines(self) -> tuple[str, ...]:
        return tuple(t.text for t in self.output_text)


@dataclass(frozen=True, slots=True)
class PaymentReceipt:
    output_content: OutputContent = nx("OutputContent", "elem")
    document_qualifier: str = nx("DocumentQualifier")
    integrated_print_flag: bool | None = nx("IntegratedPrintFlag", default=None)
    required_signature_flag: bool | None = nx("RequiredSignatureFlag", default=None)


@dataclass(frozen=True, slots=True)
class CardData:
    payment_brand: str | None = nx("PaymentBrand", default=None)
    masked_pan: str | None = nx("MaskedPAN", default=None)
    entry_mode: tuple[str, ...] = nx("EntryMode", default=())
    card_country_code: str | None = nx("CardCountryCode", default=None)
    extra: tuple[Extra, ...] = extras()

    def __post_init__(self) -> None:
        # Never keep a full card number: a masked PAN shows at most first 6 and last 4 digits.
        pan = self.masked_pan or ""
        if sum(c.isdigit() for c in pan) > 10:
            raise NexoFormatError("CardData", "MaskedPAN shows more than 10 digits")


@dataclass(frozen=True, slots=True)
class PaymentInstrumentData:
    payment_instrument_type: str = nx("PaymentInstrumentType")
    card_data: CardData | None = nx("CardData", "elem", None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class AmountsReq:
    currency: str = nx("Currency")
    requested_amount: Decimal | None = nx("RequestedAmount", default=None)
    extra: tuple[Extra, ...] = extras()


@dataclass(frozen=True, slots=True)
class AmountsResp:
    authorized_amount: Decimal = nx("AuthorizedAmount")
    currency: str | None = nx("Currency", default=None)
    extra: tuple[Extra, ...] = extras()
