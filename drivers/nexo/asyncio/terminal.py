"""``NexoTerminal``: nexo Sale to POI behind the engine's ``PaymentTerminal`` port.

pre-authorisation = Payment/FirstReservation, top-up = UpdateReservation (the first hold grows:
the answer carries the first hold's reference), capture = Completion (a lower amount releases the
rest), release = Reversal, sale = Normal, refund = Refund, end of day = Reconciliation, status
and diagnose = Diagnosis, card first = CardAcquisition, receipts/texts = Display/Print.

A hold's reference (the port's opaque ``ref``) IS the POI transaction: ``TransactionID@TimeStamp``
(``poi_ref``), so a capture or reversal names the POI's own transaction, also after a restart.
The state file keeps which of them are still open (the open-hold listing).

A money command whose answer is lost is resolved by TransactionStatus before the call returns
when the POI can tell (the original answer, or NotFound = nothing happened); otherwise the
result is UNKNOWN and ``last_result`` asks again later. Nothing is repeated blindly.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import replace

from drivers.base import Outcome, PersistHook, TerminalResult
from drivers.money import Money
from drivers.nexo import messages as nm
from drivers.nexo import results as r
from drivers.nexo.asyncio.client import Exchange, NexoClient, NexoOptions
from drivers.nexo.asyncio.reversal_recovery import reversed_hold
from drivers.nexo.model import (
    AmountsReq,
    MessageCategory,
    OriginalPOITransaction,
    OutputContent,
    PaymentType,
    ReversalReason,
    SaleData,
    TransactionIdentification,
)
from drivers.nexo.results import poi_ref

ACQUISITION_TTL_S = 120.0  # a card read first is paid with within this, or read again


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class NexoTerminal:
    def __init__(self, name: str, options: NexoOptions) -> None:
        self.name = name
        self.options = options
        self.client = NexoClient(options)
        self.currency = options.currency
        self._last: TerminalResult | None = None
        # Card first: the card the last CardAcquisition read, and when; the next reservation or
        # sale names it (CardAcquisitionReference) so the driver does not present it twice.
        self._acquired: tuple[TransactionIdentification, float] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    async def connect(self) -> TerminalResult:
        body = nm.LoginRequest(
            _now(),
            nm.SaleSoftware("evpay-edge", "0.1", provider_identification="EVPay"),
            "en",
            nm.SaleTerminalData(("PrinterReceipt",), "Unattended"),
        )
        ex = await self.client.service(MessageCategory.LOGIN, body, quick=True)
        return self._simple("connect", ex)

    async def close(self) -> None:
        await self.client.close()

    async def status(self) -> TerminalResult:
        return await self.diagnose()

    async def diagnose(self) -> TerminalResult:
        ex = await self.client.service(
            MessageCategory.DIAGNOSIS, nm.DiagnosisRequest(self.options.poi_id), quick=True
        )
        if ex.reply is None or not isinstance(ex.reply.body, nm.DiagnosisResponse):
            return self._lost("diagnose", ex, money=False)
        body = ex.reply.body
        result = r.simple_result("diagnose", body.response)
        if body.poi_status is not None and body.poi_status.global_status.value != "OK":
            outcome = (
                Outcome.BUSY if body.poi_status.global_status.value == "Busy" else Outcome.ERROR
            )
            result = replace(result, outcome=outcome, message=str(body.poi_status.global_status))
        return result

    # ---- money --------------------------------------------------------------------------------
    async def preauthorize(
        self, amount: Money, reference: str, persist: PersistHook | None = None
    ) -> TerminalResult:
        if not self.options.reservations:
            return TerminalResult("preauthorize", Outcome.ERROR, "this POI has no reservations")
        return await self._payment(
            "preauthorize", PaymentType.FIRST_RESERVATION, amount, reference, None, persist
        )

    async def add_hold(
        self,
        first_ref: str,
        first_trace: int | None,  # noqa: ARG002 - ZVT's; nexo names the hold by its reference
        amount: Money,
        reference: str,
        persist: PersistHook | None = None,
    ) -> TerminalResult:
        if not self.options.reservations:
            return TerminalResult("add_hold", Outcome.ERROR, "this POI has no reservations")
        return await self._payment(
            "add_hold", PaymentType.UPDATE_RESERVATION, amount, reference, first_ref, persist
        )

    async def capture(
        self,
        ref: str,
        held: Money,
        amount: Money,
        reference: str,
        persist: PersistHook | None = None,
        exact: bool = False,
    ) -> TerminalResult:
        # nexo's Completion names the amount to book, so ``exact`` needs nothing more; a capture
        # above the known hold is refused here unless a lost top-up may have made it bigger.
        if amount > held and not exact:
            return TerminalResult("capture", Outcome.ERROR, f"capture {amount} above hold {held}")
        return await self._payment(
            "capture", PaymentType.COMPLETION, amount, reference, ref, persist
        )

    async def sale(self, amount: Money, persist: PersistHook | None = None) -> TerminalResult:
        return await self._payment("sale", PaymentType.NORMAL, amount, "sale", None, persist)

    async def refund(self, amount: Money, persist: PersistHook | None = None) -> TerminalResult:
        return await self._payment("refund", PaymentType.REFUND, amount, "refund", None, persist)

    async def release(
        self,
        ref: str,
        held: Money,  # noqa: ARG002 - a nexo Reversal releases the whole reservation
        persist: PersistHook | None = None,
    ) -> TerminalResult:
        return await self._reversal("release", ref, persist)

    async def reverse(self, ref: str, persist: PersistHook | None = None) -> TerminalResult:
        return await self._reversal("reverse", ref, persist)

    async def _payment(
        self,
        operation: str,
        ptype: PaymentType,
        amount: Money,
        reference: str,
        hold: str | None,
        persist: PersistHook | None,
    ) -> TerminalResult:
        original = None
        if hold is not None:
            tid = self._tid(hold)
            if tid is None:
                return TerminalResult(operation, Outcome.ERROR, f"unknown hold {hold}")
            original = OriginalPOITransaction(tid, sale_id=self.options.sale_id)
        body = nm.PaymentRequest(
            SaleData(TransactionIdentification(reference[:35] or "evpay", _now())),
            nm.PaymentTransaction(AmountsReq(amount.currency, amount.to_decimal()), original),
            nm.PaymentData(self._card_read_first(ptype), payment_type=ptype),
        )
        ex = await self.client.service(MessageCategory.PAYMENT, body)
        if ex.reply is None or not isinstance(ex.reply.body, nm.PaymentResponse):
            return await self._settle(self._lost(operation, ex, money=True), persist)
        result = r.payment_result(operation, ex.reply.body, self.currency, service_id=ex.service_id)
        result = self._with_hold(result, ptype, hold)
        return await self._settle(result, persist, ex.service_id)

    async def _reversal(
        self, operation: str, hold: str, persist: PersistHook | None
    ) -> TerminalResult:
        tid = self._tid(hold)
        if tid is None:
            return TerminalResult(operation, Outcome.ERROR, f"unknown hold {hold}")
        body = nm.ReversalRequest(
            OriginalPOITransaction(tid, sale_id=self.options.sale_id),
            ReversalReason.MERCHANT_CANCEL,
        )
        ex = await self.client.service(MessageCategory.REVERSAL, body)
        if ex.reply is None or not isinstance(ex.reply.body, nm.ReversalResponse):
            return await self._settle(self._lost(operation, ex, money=True), persist)
        result = r.reversal_result(
            operation, ex.reply.body, self.currency, service_id=ex.service_id
        )
        if result.approved:
            self.client.note_hold(hold, "reversed")
        return await self._settle(replace(result, ref=hold), persist, ex.service_id)

    def _card_read_first(self, ptype: PaymentType) -> TransactionIdentification | None:
        """The card acquisition a new payment goes on (taken once), if one was read lately."""
        if ptype not in (PaymentType.FIRST_RESERVATION, PaymentType.NORMAL):
            return None
        acquired, self._acquired = self._acquired, None
        if acquired is None or time.monotonic() - acquired[1] > ACQUISITION_TTL_S:
            return None
        return acquired[0]

    # ---- holds: the reference is the POI transaction ---------------------------------------
    @staticmethod
    def payment_reference(ref: str) -> str | None:
        """The acquirer's reference of the hold ``ref`` (Adyen: its pspReference, the part of
        the POI's TransactionID after the dot), for the modifications made online; read from
        the reference itself, so a hold long closed (a refund days later) still has it. None
        when the POI's transaction id carries none."""
        tid = ref.rpartition("@")[0] or ref
        return r.psp_reference(None, tid)

    def note_closed(self, ref: str, *, captured: bool) -> None:
        """The hold was captured or cancelled at the acquirer (``HoldLedger``): the ledger marks
        it closed and is saved now, so the open list (and every sweep) no longer carries it."""
        if self.client.handles.get(ref, {}).get("state") != "open":
            return  # not ours, or closed already: nothing to store
        self.client.note_hold(ref, "completed" if captured else "reversed")
        self.client.save()

    def _tid(self, ref: str) -> TransactionIdentification | None:
        """The POI transaction a reference names, if it is one this sale system made."""
        if ref not in self.client.handles:
            return None
        tid, _, ts = ref.rpartition("@")
        return TransactionIdentification(tid, ts) if tid and ts else None

    def _with_hold(
        self, result: TerminalResult, ptype: PaymentType, hold: str | None
    ) -> TerminalResult:
        if not result.approved:
            return replace(result, ref=hold)
        if hold is not None:  # top-up and completion keep the first hold's reference
            state = "completed" if ptype is PaymentType.COMPLETION else "open"
            self.client.note_hold(hold, state)
            return replace(result, ref=hold)
        new = poi_ref(
            result.details.get("poi_transaction_id", ""),
            result.details.get("poi_time_stamp", ""),
        )
        self.client.note_hold(new, "open" if ptype is PaymentType.FIRST_RESERVATION else "done")
        return replace(result, ref=new)

    # ---- results ------------------------------------------------------------------------------
    async def _settle(
        self, result: TerminalResult, persist: PersistHook | None, service_id: str = ""
    ) -> TerminalResult:
        if persist is not None:
            await persist(result)  # stored before we forget the ServiceID's answer
        if service_id:
            self.client.finish(service_id)  # handles and tracker: one durable write
        self._last = result
        return result

    def _lost(self, operation: str, ex: Exchange, *, money: bool) -> TerminalResult:
        if ex.refused_unsent:
            return TerminalResult(operation, Outcome.BUSY, ex.refused_unsent)
        if ex.never_took_effect:
            return TerminalResult(
                operation,
                Outcome.ERROR,
                "answer lost; the POI says the request never took effect (NotFound)",
                details={"service_id": ex.service_id},
            )
        return TerminalResult(
            operation,
            Outcome.UNKNOWN if money else Outcome.ERROR,
            "no answer from the POI" + ("; ask before anything else" if money else ""),
            unreachable=True,
            details={"service_id": ex.service_id},
        )

    def _simple(self, operation: str, ex: Exchange) -> TerminalResult:
        if ex.reply is None:
            return self._lost(operation, ex, money=False)
        response = getattr(ex.reply.body, "response", None)
        if response is None:
            return TerminalResult(operation, Outcome.ERROR, "answer without a Response")
        return r.simple_result(operation, response, service_id=ex.service_id)

    async def last_result(self, persist: PersistHook | None = None) -> TerminalResult:
        """After a lost answer or a restart: what the POI says about the services in doubt.
        ``persist`` (not in the port yet) stores a recovered result before its ServiceID is
        forgotten; without it a crash right after this call loses the recovered answer."""
        doubt = await self.client.recover()
        if self.client.recovered:  # the oldest answer nobody has collected yet
            sid = next(iter(self.client.recovered))
            msg = self.client.recovered.pop(sid)
            if isinstance(msg.body, nm.PaymentResponse):
                result = r.payment_result("last_result", msg.body, self.currency, service_id=sid)
                pr = msg.body.payment_result
                ptype = pr.payment_type if pr and pr.payment_type else PaymentType.NORMAL
                return await self._settle(self._recovered_hold(result, ptype), persist, sid)
            if isinstance(msg.body, nm.ReversalResponse):
                result = r.reversal_result("last_result", msg.body, self.currency, service_id=sid)
                return await self._settle(reversed_hold(self.client, result, sid), persist, sid)
            self.client.finish(sid)
        if doubt:
            return TerminalResult("last_result", Outcome.UNKNOWN, doubt, unreachable=True)
        if self.client.not_found:
            gone = self.client.not_found.pop()
            return TerminalResult(
                "last_result",
                Outcome.ERROR,
                f"ServiceID {gone} never took effect (the POI says NotFound)",
                details={"service_id": gone},
            )
        if self._last is not None:
            return replace(self._last, operation="last_result")
        return TerminalResult("last_result", Outcome.ERROR, "no result known")

    def _recovered_hold(self, result: TerminalResult, ptype: PaymentType) -> TerminalResult:
        """A recovered approval names the hold it acted on when this sale system knows it (its
        state follows ``ptype``), else it is a new one (a reservation recovered after a restart
        must be capturable)."""
        ref = poi_ref(
            result.details.get("poi_transaction_id", ""),
            result.details.get("poi_time_stamp", ""),
        )
        return self._with_hold(result, ptype, ref if ref in self.client.handles else None)

    # ---- other services -----------------------------------------------------------------------
    async def read_card(self, timeout_s: int) -> TerminalResult:
        body = nm.CardAcquisitionRequest(
            SaleData(TransactionIdentification("card-read", _now())),
            nm.CardAcquisitionTransaction(),
        )
        ex = await self.client.service(MessageCategory.CARD_ACQUISITION, body, timeout_s=timeout_s)
        if ex.reply is None or not isinstance(ex.reply.body, nm.CardAcquisitionResponse):
            return self._lost("read_card", ex, money=False)
        ca = ex.reply.body
        tid = ca.poi_data.poi_transaction_id
        approved = r.outcome_of(ca.response) is Outcome.APPROVED
        self._acquired = (tid, time.monotonic()) if approved else None
        return replace(
            r.simple_result(
                "read_card",
                ca.response,
                poi_transaction_id=tid.transaction_id,
                poi_time_stamp=tid.time_stamp,
            ),
            card=r.card_of(ca.payment_instrument_data),
        )

    async def abort(self) -> TerminalResult:
        sent = await self.client.abort("MerchantAbort")
        if not sent:
            return TerminalResult("abort", Outcome.ERROR, "nothing in flight to abort")
        return TerminalResult("abort", Outcome.APPROVED, "abort sent")

    async def end_of_day(self) -> TerminalResult:
        ex = await self.client.service(
            MessageCategory.RECONCILIATION, nm.ReconciliationRequest("SaleReconciliation")
        )
        if ex.reply is None or not isinstance(ex.reply.body, nm.ReconciliationResponse):
            return self._lost("end_of_day", ex, money=False)
        return r.reconciliation_result(ex.reply.body, self.currency)

    async def display(self, lines: Sequence[str], seconds: int) -> TerminalResult:
        out = nm.DisplayOutput(
            OutputContent.of_lines(tuple(lines)),
            "CustomerDisplay",
            "Display",
            response_required_flag=True,
            minimum_display_time=seconds,
        )
        ex = await self.client.service(
            MessageCategory.DISPLAY, nm.DisplayRequest((out,)), quick=True
        )
        if ex.reply is None or not isinstance(ex.reply.body, nm.DisplayResponse):
            return self._lost("display", ex, money=False)
        return r.simple_result("display", ex.reply.body.output_result[0].response)

    async def print_text(self, lines: Sequence[str]) -> TerminalResult:
        out = nm.PrintOutput(OutputContent.of_lines(tuple(lines)), "CustomerReceipt", "PrintEnd")
        ex = await self.client.service(MessageCategory.PRINT, nm.PrintRequest(out), quick=True)
        return self._simple("print_text", ex)

    async def open_preauthorizations(self) -> TerminalResult:
        """nexo has no listing of open reservations. What stands in for it is the driver's own
        durable ledger: every reservation went through a ServiceID stored before sending and
        resolved by TransactionStatus, so once nothing is in doubt the handles still open are
        the reservations this sale system holds on the POI (a POI expiring one by itself is
        the case this cannot see). While a ServiceID is in doubt there is no answer."""
        doubt = await self.client.recover()
        if doubt:
            return TerminalResult("open_preauthorizations", Outcome.BUSY, doubt)
        open_handles = tuple(k for k, v in self.client.handles.items() if v.get("state") == "open")
        return TerminalResult(
            "open_preauthorizations",
            Outcome.APPROVED,
            f"{len(open_handles)} open (driver ledger)",
            open_refs=open_handles,
            details={"source": "driver-ledger"},
        )
