"""The simulated nexo POI's brain: what it answers and what its ledger records, with the
variants real POIs show (``drivers/sim/nexo_poi.py`` serves it over HTTP).

``NexoPoi`` is sans-I/O: a request ``Message`` in, a response out, a ledger of what it did.

Variants (``PoiConfig``): ``reservations`` — FirstReservation/UpdateReservation/Completion
supported or refused (Swedbank's PAX list only Normal and Refund); ``partial_minor`` — a
reservation or sale approved for at most this much (``Result`` Partial); ``lose_answers`` — the
next N money commands are carried out and then the connection is cut before the answer;
``drop_requests`` — the next N money commands are cut before the POI acts (nothing happened);
``busy`` — the next N commands answer Busy and do nothing; ``in_progress`` — TransactionStatus
answers InProgress N times before telling; ``delay_s`` — every answer comes this late;
``refuse_open_reversal`` — a Reversal of a reservation not yet completed is refused;
``tap_required`` — a CardAcquisition, and a reservation or sale that names no card read first,
waits (up to ``card_wait_s``) for a card to be presented (``tap()``), and an AbortRequest ends
the wait (Aborted); ``decline`` — the next N cards presented for a payment are refused
(Refusal). A Payment naming a CardAcquisitionReference must name a card acquired here and not
used yet.
The ledger is the POI's own record, against which tests check what the driver booked; with
``state_path`` it is kept in that file (rewritten atomically after each money command, and read
back when the POI starts), as a terminal keeps its journal across a power cycle. The answers a
TransactionStatus repeats are not kept: a restarted POI answers NotFound for earlier services.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from drivers.nexo import messages as nm
from drivers.nexo.adyen_crypto import AdyenKey
from drivers.nexo.errors import NexoFormatError
from drivers.nexo.messages import Message
from drivers.nexo.model import (
    AmountsResp,
    CardData,
    ErrorCondition,
    GlobalStatus,
    MessageType,
    OutputContent,
    PaymentInstrumentData,
    PaymentReceipt,
    PaymentType,
    POIData,
    Response,
    Result,
    TransactionIdentification,
)
from drivers.nexo.wire import Encoding

MAX_LEDGER = 10_000  # transactions kept; beyond that the POI refuses (a real one would too)
_STAMP = "2026-01-01T00:00:00Z"


@dataclass
class PoiConfig:
    encoding: Encoding = "xml"
    poi_id: str = "POI-SIM-1"
    key: AdyenKey | None = None
    reservations: bool = True
    partial_minor: int | None = None
    lose_answers: int = 0
    drop_requests: int = 0
    busy: int = 0
    in_progress: int = 0
    delay_s: float = 0.0
    refuse_open_reversal: bool = False
    state_path: Path | None = None
    tap_required: bool = False
    card_wait_s: float = 30.0
    decline: int = 0


@dataclass
class Txn:
    kind: str  # sale, reservation, refund
    amount: Decimal  # what is held (reservation) or booked
    currency: str
    state: str = "open"  # reservation: open, completed, reversed; others: done, reversed
    booked: Decimal = Decimal(0)  # what a completion booked
    brand: str = "mc"


@dataclass
class NexoPoi:
    config: PoiConfig
    ledger: dict[str, Txn] = field(default_factory=dict)
    answers: dict[tuple[str, str], Message] = field(default_factory=dict)
    requests: list[Message] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # every request body as received (bounded)
    sent: list[bytes] = field(default_factory=list)  # every answer body as sent (bounded)
    period: int = 1
    taps: int = 0  # cards presented for the next CardAcquisition (tap_required)
    aborts: int = 0  # AbortRequests not yet taken by a waiting CardAcquisition
    acquired: set[str] = field(default_factory=set)  # card acquisitions not used by a payment
    _n: int = 0

    def __post_init__(self) -> None:
        path = self.config.state_path
        if path is None or not path.exists():
            return
        saved = json.loads(path.read_text(encoding="utf-8"))
        self._n, self.period = int(saved["n"]), int(saved["period"])
        for tid, t in saved["ledger"].items():
            amounts = {k: Decimal(t[k]) for k in ("amount", "booked")}
            self.ledger[tid] = Txn(**{**t, **amounts})

    def save(self) -> None:
        """Write the ledger to ``state_path`` (temp file, then rename)."""
        path = self.config.state_path
        if path is None:
            return
        ledger = {
            tid: {**asdict(t), "amount": str(t.amount), "booked": str(t.booked)}
            for tid, t in self.ledger.items()
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"n": self._n, "period": self.period, "ledger": ledger}))
        tmp.replace(path)

    # ---- the ledger, as tests read it ---------------------------------------------------------
    def booked(self) -> Decimal:
        """What the POI booked for the merchant: sales and completions, minus refunds."""
        total = Decimal(0)
        for t in self.ledger.values():
            if t.kind == "sale" and t.state == "done":
                total += t.amount
            elif t.kind == "reservation" and t.state == "completed":
                total += t.booked
            elif t.kind == "refund" and t.state == "done":
                total -= t.amount
        return total

    def tap(self) -> None:
        """A driver presents a card for the next CardAcquisition (``tap_required``)."""
        self.taps += 1

    def open_reservations(self) -> list[str]:
        return [k for k, t in self.ledger.items() if t.kind == "reservation" and t.state == "open"]

    # ---- requests -----------------------------------------------------------------------------
    def handle(self, request: Message) -> Message | None:
        """The response to ``request`` (None: nexo's "no response", e.g. for Abort)."""
        if len(self.requests) < MAX_LEDGER:
            self.requests.append(request)
        body = request.body
        if isinstance(body, nm.AbortRequest):
            self.aborts += 1
            return None
        if isinstance(body, nm.TransactionStatusRequest):
            return self._reply(request, self._status(body))
        if isinstance(body, (nm.PaymentRequest, nm.ReversalRequest)) and self.config.busy > 0:
            self.config.busy -= 1
            return self._reply(request, self._failure(body, ErrorCondition.BUSY))
        reply = self._reply(request, self._act(body))
        if request.header.service_id is not None:
            self.answers[(request.header.sale_id, request.header.service_id)] = reply
        if isinstance(body, (nm.PaymentRequest, nm.ReversalRequest, nm.ReconciliationRequest)):
            self.save()
        return reply

    def _act(self, body: nm.Body) -> nm.Body:
        ok = Response(Result.SUCCESS)
        if isinstance(body, nm.PaymentRequest):
            return self._payment(body)
        if isinstance(body, nm.ReversalRequest):
            return self._reversal(body)
        if isinstance(body, nm.LoginRequest):
            return nm.LoginResponse(ok)
        if isinstance(body, nm.LogoutRequest):
            return nm.LogoutResponse(ok)
        if isinstance(body, nm.DiagnosisRequest):
            return nm.DiagnosisResponse(ok, poi_status=nm.POIStatus(GlobalStatus.OK))
        if isinstance(body, nm.CardAcquisitionRequest):
            return self._card_acquisition(body)
        if isinstance(body, nm.ReconciliationRequest):
            return self._reconciliation(body)
        if isinstance(body, nm.DisplayRequest):
            return nm.DisplayResponse(
                tuple(nm.OutputResult(ok, d.device, d.info_qualify) for d in body.display_output)
            )
        if isinstance(body, nm.PrintRequest):
            return nm.PrintResponse(ok, body.print_output.document_qualifier)
        raise NexoFormatError(type(body).__name__, "not a request this POI takes")

    def _card_acquisition(self, body: nm.CardAcquisitionRequest) -> nm.Body:
        if self.config.tap_required and self.taps == 0:
            aborted, self.aborts = self.aborts > 0, 0
            fail = Response(
                Result.FAILURE, ErrorCondition.ABORTED if aborted else ErrorCondition.CANCEL
            )
            return nm.CardAcquisitionResponse(fail, body.sale_data, self._poi_data(self._new_id()))
        self.taps = max(0, self.taps - 1)
        tid = self._new_id()
        self.acquired.add(tid)
        return nm.CardAcquisitionResponse(
            Response(Result.SUCCESS), body.sale_data, self._poi_data(tid), ("mc",), _instrument()
        )

    def _payment(self, body: nm.PaymentRequest) -> nm.Body:
        amounts = body.payment_transaction.amounts_req
        requested = amounts.requested_amount
        ptype = body.payment_type
        if requested is None or requested <= 0 or len(self.ledger) >= MAX_LEDGER:
            return self._failure(body, ErrorCondition.NOT_ALLOWED)
        acquisition = body.payment_data.card_acquisition_reference if body.payment_data else None
        if acquisition is not None:  # the card read first: it must be one read here, once
            if acquisition.transaction_id not in self.acquired:
                return self._failure(body, ErrorCondition.NOT_FOUND)
            self.acquired.discard(acquisition.transaction_id)
        elif needs_card(body) and (self.config.tap_required or self.config.decline):
            if self.config.tap_required and self.taps == 0:
                aborted, self.aborts = self.aborts > 0, 0
                why = ErrorCondition.ABORTED if aborted else ErrorCondition.CANCEL
                return self._failure(body, why)
            self.taps = max(0, self.taps - 1)
            if self.config.decline > 0:
                self.config.decline -= 1
                return self._failure(body, ErrorCondition.REFUSAL)
        reservation_types = (
            PaymentType.FIRST_RESERVATION,
            PaymentType.UPDATE_RESERVATION,
            PaymentType.COMPLETION,
        )
        if ptype in reservation_types and not self.config.reservations:
            return self._failure(body, ErrorCondition.UNAVAILABLE_SERVICE)
        if ptype in (PaymentType.UPDATE_RESERVATION, PaymentType.COMPLETION):
            orig = body.payment_transaction.original_poi_transaction
            tid = orig.poi_transaction_id if orig else None
            txn = self.ledger.get(tid.transaction_id) if tid else None
            if tid is None or txn is None or txn.kind != "reservation" or txn.state != "open":
                return self._failure(body, ErrorCondition.NOT_FOUND)
            if ptype is PaymentType.UPDATE_RESERVATION:
                txn.amount += requested
                return self._approved(body, tid.transaction_id, requested, amounts.currency)
            if requested > txn.amount:  # a completion above the hold is refused
                return self._failure(body, ErrorCondition.NOT_ALLOWED)
            txn.state, txn.booked = "completed", requested
            return self._approved(body, tid.transaction_id, requested, amounts.currency)
        approved = requested
        if self.config.partial_minor is not None and ptype is not PaymentType.REFUND:
            approved = min(requested, Decimal(self.config.partial_minor).scaleb(-2))
        kind = {PaymentType.REFUND: "refund", PaymentType.FIRST_RESERVATION: "reservation"}.get(
            ptype, "sale"
        )
        tid_new = self._new_id()
        state = "open" if kind == "reservation" else "done"
        self.ledger[tid_new] = Txn(kind, approved, amounts.currency, state)
        return self._approved(
            body, tid_new, approved, amounts.currency, partial=approved < requested
        )

    def _reversal(self, body: nm.ReversalRequest) -> nm.Body:
        tid = body.original_poi_transaction.poi_transaction_id
        txn = self.ledger.get(tid.transaction_id) if tid else None
        if txn is None or txn.state == "reversed":
            return self._failure(body, ErrorCondition.NOT_FOUND)
        if txn.kind == "reservation" and txn.state == "open" and self.config.refuse_open_reversal:
            return self._failure(body, ErrorCondition.NOT_ALLOWED)
        reversed_amount = txn.booked if txn.state == "completed" else txn.amount
        txn.state = "reversed"
        return nm.ReversalResponse(
            Response(Result.SUCCESS),
            self._poi_data(self._new_id()),
            reversed_amount=reversed_amount,
        )

    def _reconciliation(self, body: nm.ReconciliationRequest) -> nm.Body:
        by_key: dict[tuple[str, str], list[Decimal]] = {}
        for t in self.ledger.values():
            if t.kind == "sale" and t.state == "done":
                by_key.setdefault((t.brand, t.currency), []).append(t.amount)
            elif t.kind == "reservation" and t.state == "completed":
                by_key.setdefault((t.brand, t.currency), []).append(t.booked)
        totals = tuple(
            nm.TransactionTotals(
                "Card",
                (nm.PaymentTotals("Debit", len(v), sum(v, Decimal(0))),),
                card_brand=brand,
                payment_currency=cur,
            )
            for (brand, cur), v in sorted(by_key.items())
        )
        period = str(self.period)
        self.period += 1
        return nm.ReconciliationResponse(
            Response(Result.SUCCESS), body.reconciliation_type, totals, poi_reconciliation_id=period
        )

    def _status(self, body: nm.TransactionStatusRequest) -> nm.Body:
        ref = body.message_reference
        key = (ref.sale_id or "", ref.service_id or "") if ref else ("", "")
        if self.config.in_progress > 0:
            self.config.in_progress -= 1
            return nm.TransactionStatusResponse(
                Response(Result.FAILURE, ErrorCondition.IN_PROGRESS), ref
            )
        answer = self.answers.get(key)
        if answer is None:
            return nm.TransactionStatusResponse(
                Response(Result.FAILURE, ErrorCondition.NOT_FOUND), ref
            )
        b, head = answer.body, answer.header
        if isinstance(b, nm.PaymentResponse):
            repeated = nm.RepeatedMessageResponse(head, payment_response=b)
        elif isinstance(b, nm.ReversalResponse):
            repeated = nm.RepeatedMessageResponse(head, reversal_response=b)
        elif isinstance(b, nm.CardAcquisitionResponse):
            repeated = nm.RepeatedMessageResponse(head, card_acquisition_response=b)
        else:
            return nm.TransactionStatusResponse(
                Response(Result.FAILURE, ErrorCondition.NOT_FOUND), ref
            )
        return nm.TransactionStatusResponse(Response(Result.SUCCESS), ref, repeated)

    # ---- building answers ---------------------------------------------------------------------
    def _new_id(self) -> str:
        """Adyen's POI names a transaction ``tenderReference.pspReference``; others by one id."""
        self._n += 1
        if self.config.encoding == "adyen-json":
            return f"T{self._n:06d}.{8816000000000000 + self._n}"
        return f"T{self._n:06d}"

    @staticmethod
    def _poi_data(tid: str) -> POIData:
        return POIData(TransactionIdentification(tid, _STAMP))

    def _approved(
        self, body: nm.PaymentRequest, tid: str, amount: Decimal, cur: str, *, partial: bool = False
    ) -> nm.PaymentResponse:
        receipt = PaymentReceipt(
            OutputContent.of_lines(("EVPAY SIM", f"{body.payment_type}", f"{amount} {cur}")),
            "CustomerReceipt",
        )
        extra = None
        tender, dot, psp = tid.rpartition(".")
        if dot:  # as Adyen's answer carries it (form-encoded AdditionalResponse)
            extra = f"pspReference={psp}&tenderReference={tender}"
        return nm.PaymentResponse(
            Response(Result.PARTIAL if partial else Result.SUCCESS, None, extra),
            body.sale_data,
            self._poi_data(tid),
            nm.PaymentResult(_instrument(), AmountsResp(amount, cur), body.payment_type),
            (receipt,),
        )

    def _failure(self, body: nm.Body, condition: ErrorCondition) -> nm.Body:
        fail = Response(Result.FAILURE, condition)
        if isinstance(body, nm.PaymentRequest):
            return nm.PaymentResponse(fail, body.sale_data, self._poi_data(self._new_id()))
        return nm.ReversalResponse(fail)

    def _reply(self, request: Message, body: nm.Body) -> Message:
        header = replace(
            request.header, message_type=MessageType.RESPONSE, poi_id=self.config.poi_id
        )
        return Message(header, body)


def needs_card(body: nm.Body) -> bool:
    """A reservation or sale with no card read first: the card is presented for it."""
    if not isinstance(body, nm.PaymentRequest):
        return False
    pd = body.payment_data
    first = body.payment_type in (PaymentType.FIRST_RESERVATION, PaymentType.NORMAL)
    return first and (pd is None or pd.card_acquisition_reference is None)


def _instrument() -> PaymentInstrumentData:
    return PaymentInstrumentData("Card", CardData("mc", "541333****0010", ("Contactless",)))
