"""ZVT codes named from the specification's tables (PA00P015 ch. 10 "Error messages",
ch. 3 "Intermediate status", the command table)."""

from __future__ import annotations

from enum import IntEnum


class Command(IntEnum):
    """CLASS<<8 | INSTR of the APDUs the gateway sends or receives."""

    REGISTRATION = 0x0600
    AUTHORIZATION = 0x0601
    LOG_OFF = 0x0602
    PRINT_LINE = 0x06D1
    PRINT_TEXT_BLOCK = 0x06D3
    COMPLETION = 0x060F
    ABORT_PT = 0x061E  # PT → ECR: the sequence ended unsuccessfully
    REPEAT_RECEIPT = 0x0620
    PRE_AUTHORISATION = 0x0622
    PARTIAL_REVERSAL = 0x0623
    BOOK_TOTAL = 0x0624
    PRE_AUTH_REVERSAL = 0x0625
    REVERSAL = 0x0630
    REFUND = 0x0631
    END_OF_DAY = 0x0650
    DIAGNOSIS = 0x0670
    ABORT = 0x06B0  # ECR → PT
    READ_CARD = 0x06C0
    DISPLAY_TEXT = 0x06E0
    STATUS_ENQUIRY = 0x0501
    STATUS_INFORMATION = 0x040F
    INTERMEDIATE_STATUS = 0x04FF
    ACK = 0x8000
    # 84 xx (negative acknowledgement) carries the error code in INSTR: see is_nack().


def is_nack(cls: int) -> bool:
    return cls == 0x84


# PA00P015 ch. 10: result codes (BMP 27, the 84 xx APRC and the first byte of 06 1E).
RESULT_TEXT: dict[int, str] = {
    0x00: "no error",
    0x05: "declined by the card issuer",
    0x13: "contactless limit reached: PIN needed",
    0x21: "card expired",
    0x33: "PIN entry required",
    0x64: "card not readable",
    0x65: "card data not present",
    0x66: "processing error",
    0x67: "function not permitted for ec- and Maestro cards",
    0x68: "function not permitted for credit and tank cards",
    0x6A: "turnover file full",
    0x6B: "function deactivated (PT not registered)",
    0x6C: "abort via timeout or abort key",
    0x6E: "card in blocked list",
    0x6F: "wrong currency",
    0x71: "credit not sufficient",
    0x72: "chip error",
    0x73: "card data incorrect",
    0x77: "end-of-day batch not possible",
    0x78: "card expired",
    0x79: "card not yet valid",
    0x7A: "card unknown",
    0x7D: "communication error",
    0x83: "function not possible",
    0x85: "key missing",
    0x89: "PIN pad defective",
    0x9A: "ZVT protocol error",
    0x9B: "error from dial-up or communication fault",
    0x9C: "please wait (terminal busy)",
    0xA0: "receiver not ready",
    0xA1: "remote station does not respond",
    0xA3: "no connection",
    0xB1: "memory full",
    0xB2: "merchant journal full",
    0xB4: "already reversed",
    0xB5: "reversal not possible",
    0xB7: "pre-authorisation incorrect (amount too high) or amount wrong",
    0xB8: "error pre-authorisation",
    0xBF: "voltage supply too low",
    0xC0: "card locking mechanism defective",
    0xC1: "merchant card locked",
    0xC2: "diagnosis required",
    0xC3: "maximum amount exceeded",
    0xC4: "card profile invalid",
    0xC5: "payment method not supported",
    0xC6: "currency not applicable",
    0xC8: "amount too small",
    0xC9: "maximum transaction amount too small",
    0xCB: "function only allowed in EURO",
    0xCC: "printer not ready",
    0xDC: "card inserted",
    0xE0: "remote maintenance activated",
    0xE2: "card reader does not answer",
    0xE3: "shutter closed",
    0xE4: "terminal activation required",
    0xEC: "PIN processing not possible",
    0xF0: "reconciliation required",
    0xFC: "necessary device missing or defective",
    0xFF: "system error",
}


def result_text(code: int) -> str:
    if code in RESULT_TEXT:
        return RESULT_TEXT[code]
    if 0x01 <= code <= 0x63:
        return f"declined by the authorisation system (host code {code:02X})"
    return f"unknown result code {code:02X}"


# Result codes that mean "the customer or card said no", not "the terminal failed".
DECLINE_CODES = frozenset(range(0x01, 0x64)) | {
    0x64,
    0x65,
    0x6E,
    0x71,
    0x72,
    0x73,
    0x78,
    0x79,
    0x7A,
}
ABORT_CODES = frozenset({0x6C})
BUSY_CODES = frozenset({0x9C})

# PA00P015 ch. 3: intermediate status (04 FF) texts an unattended terminal shows.
INTERMEDIATE_TEXT: dict[int, str] = {
    0x00: "PT is waiting for amount confirmation",
    0x01: "please watch PIN pad",
    0x02: "please watch PIN pad",
    0x03: "not accepted",
    0x04: "PT is waiting for response from FEP",
    0x05: "PT is sending auto-reversal",
    0x06: "PT is sending post-bookings",
    0x07: "card not admitted",
    0x08: "card unknown / undefined",
    0x09: "expired card",
    0x0A: "insert card",
    0x0B: "please remove card",
    0x0C: "card not readable",
    0x0D: "processing error",
    0x0E: "please wait",
    0x0F: "PT is commencing an automatic end-of-day batch",
    0x10: "invalid card",
    0x12: "system malfunction",
    0x13: "payment not possible",
    0x14: "credit not sufficient",
    0x15: "incorrect PIN",
    0x17: "please wait",
    0x18: "PIN try limit exceeded",
    0x19: "card data incorrect",
    0x1B: "approved, please fill up",
    0x1C: "approved, please take goods",
    0x1D: "declined",
}

# Config byte bits for Registration (06 00).
CONFIG_ECR_PRINTS_PAYMENT = 0x02
CONFIG_ECR_PRINTS_ADMIN = 0x04
CONFIG_INTERMEDIATE_STATUS = 0x08
CONFIG_ECR_CONTROLS_PAYMENT = 0x10
CONFIG_ECR_CONTROLS_ADMIN = 0x20
CONFIG_ECR_PRINT_TYPE = 0x80

RECEIPT_NONE = 0xFFFF  # "no open pre-authorisation" sentinel in BMP 87
