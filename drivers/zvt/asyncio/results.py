"""What a ZVT answer means as a typed ``TerminalResult``: the result code read as approved,
declined, aborted, busy or an error, the hold reference and amounts it carries, a lost line
read as an unknown outcome for a money command, and a card read's scheme and AID."""

from __future__ import annotations

from dataclasses import replace

from drivers.base import BrandTotal, CardInfo, Outcome, TerminalResult
from drivers.money import Currency, Money, currency_by_numeric
from drivers.zvt import messages as m
from drivers.zvt.asyncio.client import SequenceOutcome
from drivers.zvt.constants import ABORT_CODES, BUSY_CODES, DECLINE_CODES, result_text
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import Tlv, find_tlv
from drivers.zvt.refs import display_ref, hold_ref

# Fuel and fleet cards are not bank cards even when a card read returns an AID (Feig practice).
_NON_PAYMENT_AIDS = ("A00000083", "A00000066")


class ResultReader:
    """How ``ZvtTerminal`` reads its answers (it sets these)."""

    terminal_id: str | None
    _currency: Currency

    def _lost(self, operation: str, money: bool, error: str) -> TerminalResult:
        # We cannot tell whether the terminal started: a money command's fate is unknown.
        outcome = Outcome.UNKNOWN if money else Outcome.ERROR
        return TerminalResult(operation, outcome, f"connection lost: {error}", unreachable=True)

    def _interpret(
        self, operation: str, seq: SequenceOutcome, money: bool, requested: Money | None
    ) -> TerminalResult:
        last = seq.results[-1] if seq.results else None
        lines = tuple(seq.printed)
        if seq.rejected is not None:
            kind = Outcome.BUSY if seq.rejected in BUSY_CODES else Outcome.ERROR
            return TerminalResult(
                operation, kind, result_text(seq.rejected), seq.rejected, receipt_lines=lines
            )
        if seq.timed_out is not None:
            kind = Outcome.UNKNOWN if money else Outcome.ERROR
            base = self._from_status(operation, last, requested) if last else None
            text = f"no answer from the terminal ({seq.timed_out} expired)"
            return TerminalResult(
                operation, kind, text, ref=base.ref if base else None, unreachable=True
            )
        if operation == "open_preauthorizations":
            return _open_preauths(seq)
        if operation == "register" and seq.results:
            # A PT answers a registration with 80 00 and 06 0F; a 04 0F in it is the stale
            # tail of another ECR's sequence (docs/ZVT-VARIANTS.md, 8): not registered.
            text = "a result (04 0F) is no answer to a registration"
            return TerminalResult(operation, Outcome.ERROR, text, receipt_lines=lines)
        if seq.aborted is not None:
            code = seq.aborted.code
            return TerminalResult(
                operation, _classify(code), result_text(code), code, receipt_lines=lines
            )
        if last is not None:
            result = self._from_status(operation, last, requested)
            return replace(result, receipt_lines=lines or result.receipt_lines)
        if money:
            # Every money command reports its result in a 04 0F before the 06 0F; a completion
            # alone carries no amount and no receipt: nothing to book on (docs/ZVT-VARIANTS.md).
            text = "the terminal completed without a result (no 04 0F)"
            return TerminalResult(operation, Outcome.UNKNOWN, text, receipt_lines=lines)
        completion = seq.completion
        details: dict[str, str] = {}
        tid = None
        outcome = Outcome.APPROVED
        text = "ok"
        if completion is not None:
            tid = completion.terminal_id
            if completion.software_version is not None:
                details["software_version"] = completion.software_version
            status = completion.terminal_status
            if status is not None:
                details["terminal_status"] = f"{status:02X}"
                if status != 0:
                    outcome, text = (
                        Outcome.ERROR,
                        f"terminal status {status:02X}: {result_text(status)}",
                    )
            if completion.status_byte is not None:
                details["status_byte"] = f"{completion.status_byte:02X}"
        return TerminalResult(
            operation, outcome, text, terminal_id=tid, receipt_lines=lines, details=details
        )

    def _from_status(
        self, operation: str, status: m.Message, requested: Money | None
    ) -> TerminalResult:
        if (
            status.result_code is None
        ):  # BMP 27 missing: that is no approval, whatever else it carries
            outcome = Outcome.UNKNOWN if requested is not None else Outcome.ERROR
            return TerminalResult(
                operation,
                outcome,
                "status information without a result code",
                ref=hold_ref(status.receipt_number),
                ref_display=display_ref(status.receipt_number),
            )
        code = status.result_code
        if (
            code == 0
            and status.receipt_number is None
            and operation in ("preauthorize", "add_hold")
        ):
            # A hold without its receipt number could never be captured or released.
            return TerminalResult(operation, Outcome.UNKNOWN, "approval without a receipt number")
        amount = None
        if status.amount is not None:
            numeric = status.currency
            alpha = currency_by_numeric(numeric).alpha if numeric else self._currency.alpha
            amount = Money(status.amount, alpha)
        elif requested is not None and code == 0:
            amount = requested
        card = None
        aid = _application_id(status.tlv) or status.aid
        if status.masked_pan or status.card_name or aid:
            card = CardInfo(
                masked_pan=status.masked_pan,
                brand=status.card_name,
                aid=aid,
                is_payment_card=_is_payment_card(status.tlv),
            )
        totals = status.totals
        return TerminalResult(
            operation,
            Outcome.APPROVED if code == 0 else _classify(code),
            status.additional_text or result_text(code),
            code,
            amount=amount,
            ref=hold_ref(status.receipt_number),
            ref_display=display_ref(status.receipt_number),
            trace_no=status.trace_number,
            terminal_id=status.terminal_id or self.terminal_id,
            card=card,
            totals=tuple(
                BrandTotal(b, n, a, self._currency.alpha) for b, n, a in totals.groups if n or a
            )
            if totals
            else (),
            batch_range=(hold_ref(totals.first_receipt), hold_ref(totals.last_receipt))
            if totals
            else None,
        )


def _open_preauths(seq: SequenceOutcome) -> TerminalResult:
    """The enquiry's only answer is 06 1E B8 with BMP 87 (FF FF: none open) and/or TLV 23:
    the one form that lists. Anything else -- a bare 06 1E B8 (what a failed booking of an
    unknown receipt ends with, e.g. a stale frame of an earlier exchange), a 06 0F completion
    (a late end of another command), another code -- is a failed enquiry, never an empty list:
    the engine reads absence from the list as "released" (docs/ZVT-VARIANTS.md, 7)."""
    operation = "open_preauthorizations"
    aborted = seq.aborted
    if aborted is not None and aborted.code == 0xB8 and aborted.message.lists_open_preauths:
        try:
            refs = tuple(hold_ref(n) for n in aborted.message.open_preauths)
        except ZvtDecodeError as exc:  # a receipt that is not BCD: nothing is known from it
            text = f"06 1E B8 with an unreadable list ({exc}): no answer to the enquiry"
            return TerminalResult(operation, Outcome.ERROR, text, 0xB8)
        return TerminalResult(
            operation, Outcome.APPROVED, "open pre-authorisations listed", 0xB8, open_refs=refs
        )
    if aborted is not None and aborted.code == 0xB8:
        text = "06 1E B8 without BMP 87 or a TLV 23 list: no answer to the enquiry"
        return TerminalResult(operation, Outcome.ERROR, text, 0xB8)
    if aborted is not None:
        return TerminalResult(
            operation, _classify(aborted.code), result_text(aborted.code), aborted.code
        )
    text = "the terminal ended the enquiry without a 06 1E B8 list: no answer to it"
    return TerminalResult(operation, Outcome.ERROR, text)


def _classify(code: int) -> Outcome:
    if code in ABORT_CODES:
        return Outcome.ABORTED
    if code in BUSY_CODES:
        return Outcome.BUSY
    if code in DECLINE_CODES:
        return Outcome.DECLINED
    return Outcome.ERROR


def _application_id(tlv: tuple[Tlv, ...]) -> str | None:
    for container in (tlv, *(t.children for t in tlv if t.tag in (0x60, 0x61, 0x62))):
        app = find_tlv(container, 0x60)
        source = app.children if app else container
        aid = find_tlv(source, 0x43)
        if aid is not None:
            return aid.value.hex().upper()
    return None


def _is_payment_card(tlv: tuple[Tlv, ...]) -> bool:
    aid = _application_id(tlv)
    if aid is None:
        return find_tlv(tlv, 0x4C) is None  # a UID and no application: an RFID card
    return not aid.startswith(_NON_PAYMENT_AIDS)
