"""The receipt and the CPO's fiscal data (a sub-machine of a captured session:
awaiting → complete | pending → delivered_late).

What the receipt shows is the engine's facts (``receipt_facts``) and the CPO's fiscal data,
rendered by the site's country profile (``gateway/fiscal/profiles.py``). A receipt that lacks a
required field is printed as pending and completed once as an e-receipt when the data comes.
"""

from __future__ import annotations

from datetime import datetime

from gateway.fiscal.receipt import FiscalData, Receipt, ReceiptFacts, ReceiptState
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.metering import meter_proof
from gateway.payments.model import Session, update
from gateway.payments.moves import Transition, go, note
from gateway.payments.policy import Policy
from gateway.payments.states import State, Trigger
from gateway.payments.tariff_text import describe


def receipt_facts(s: Session, now: datetime, policy: Policy) -> ReceiptFacts:
    tariff = policy.pinned(s)
    paid = next((h.booking_ref for h in s.holds if h.booking_ref is not None), None)
    url = (
        policy.e_receipt_url.replace("{reference}", s.reference or s.id)
        if policy.e_receipt_url
        else None
    )
    return ReceiptFacts(
        reference=s.reference or s.id,
        evse=s.evse,
        at=(s.bill.captured_at or now).astimezone(policy.tz),
        energy_wh=s.metering.billed_energy_wh,
        price_minor=s.bill.price_minor,
        paid_minor=s.captured_minor,
        owed_minor=s.bill.owed_minor,
        currency=s.currency,
        vat=s.bill.vat,
        tariff=tuple(describe(tariff)) if tariff else (),
        card=s.card,
        terminal_ref=s.shown(paid),  # as the terminal's slip prints it
        e_receipt_url=url,
        meter=proof.proof() if (proof := meter_proof(s)) else None,
    )


def _fiscal_data(s: Session) -> FiscalData | None:
    i = s.invoice
    if not (i.fiscal or i.fiscal_fields or i.invoice_reference or i.invoice_url):
        return None
    return FiscalData(i.invoice_reference, i.invoice_url, dict(i.fiscal_fields), i.fiscal)


def render(s: Session, now: datetime, policy: Policy) -> Receipt:
    return policy.fiscal.render(receipt_facts(s, now, policy), _fiscal_data(s))


def print_receipt(
    s: Session, now: datetime, policy: Policy
) -> tuple[Session, tuple[c.Command, ...]]:
    """Render the receipt with what is known now, send it to the terminal and, under a country
    profile, tell the CPO what the driver got (complete, or pending with what is missing)."""
    receipt = render(s, now, policy)
    if not receipt.lines:
        return s, ()  # no profile and no CPO lines: the terminal's own payment slip is the receipt
    state = ReceiptState.COMPLETE if receipt.complete else ReceiptState.PENDING
    s = update(
        s,
        receipt=state,
        receipt_lines=receipt.lines,
        receipt_missing=receipt.missing,
        receipt_upstream=receipt.upstream,
    )
    display = s.terminal in policy.display_only
    lines = policy.fiscal.display(receipt) if display else receipt.lines
    out: list[c.Command] = [
        c.ShowReceipt(f"{s.id}:receipt:{state}", s.id, s.terminal, lines, display)
    ]
    if policy.fiscal.code != "none":
        out.append(_receipt_message(s, state, receipt.upstream))
    return s, tuple(out)


def _receipt_message(s: Session, state: ReceiptState, upstream: tuple[str, ...]) -> c.Enqueue:
    payload = {
        "session_id": s.id,
        "authorization_reference": s.reference,
        "state": state.value,
        "lines": list(upstream),
        "missing": list(s.invoice.receipt_missing),
        "invoice_reference": s.invoice.invoice_reference,
    }
    return c.Enqueue(f"{s.id}:receipt:{state.value}", f"session:{s.id}", "session.receipt", payload)


def fiscal_arrived(
    s: Session, ev: e.FiscalDataArrived, now: datetime, policy: Policy
) -> Transition:
    """The CPO's fiscal data: printed with the receipt if it is still to be printed; after a
    pending receipt it completes it as an e-receipt (once); otherwise kept for the record."""
    i = s.invoice
    if i.receipt in (ReceiptState.COMPLETE, ReceiptState.LATE) and policy.fiscal.code != "none":
        return Transition(s, note="receipt already complete: fiscal data ignored")
    s = update(
        s,
        fiscal=tuple(ev.lines) or i.fiscal,
        fiscal_fields=ev.fields or i.fiscal_fields,
        invoice_reference=ev.invoice_reference or i.invoice_reference,
        invoice_url=ev.invoice_url or i.invoice_url,
    )
    if s.state is State.RECEIPTING:
        s = go(s, Trigger.FISCAL_SIGNED, timer=None)
        s, printed = print_receipt(s, now, policy)
        return Transition(s, printed)
    if s.state is not State.COMPLETED:
        return Transition(s)  # before the capture: printed with it
    if policy.fiscal.code == "none":  # no profile: the CPO's lines are printed whenever they come
        lines = tuple(ev.lines)
        return Transition(
            s, (c.ShowReceipt(f"{s.id}:receipt:{ev.event_id}", s.id, s.terminal, lines),)
        )
    if s.invoice.receipt is ReceiptState.PENDING:
        receipt = render(s, now, policy)
        if receipt.complete:  # the driver has gone: the complete receipt is the e-receipt
            s = update(
                s,
                receipt=ReceiptState.LATE,
                receipt_missing=(),
                notes=note(s, "fiscal data delivered after the receipt: e-receipt"),
            )
            return Transition(s, (_receipt_message(s, ReceiptState.LATE, receipt.upstream),))
        s = update(s, receipt_missing=receipt.missing)
    return Transition(s)


def fiscal_timeout(s: Session, now: datetime, policy: Policy) -> Transition:
    """No fiscal data in time: the receipt is printed as pending."""
    s, printed = print_receipt(go(s, Trigger.FISCAL_TIMEOUT, timer=None), now, policy)
    return Transition(s, printed)
