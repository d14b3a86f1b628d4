"""What a terminal command is in driver calls, and what the driver's answer is as an engine
event: the one translation between ``gateway.payments.commands`` and ``drivers.base``.

No state and no scheduling here (that is the terminal runner's): a command in, the driver
call it means; a ``TerminalResult`` in, the ``TerminalResultArrived`` the session hears.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from drivers.base import Outcome, PaymentTerminal, TerminalResult
from drivers.money import Money
from gateway.errors import StoreError
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.events import Operation

_LOGGER = logging.getLogger(__name__)

Persist = Callable[[TerminalResult], Awaitable[None]]


async def call(
    terminal: PaymentTerminal, cmd: c.TerminalCommand, persist: Persist
) -> TerminalResult:
    """Carry out ``cmd`` on the driver. ``persist`` stores a result the terminal may still
    reverse before the terminal hears we have it (ZVT: before 80 00 to the 04 0F)."""
    match cmd:
        case c.QueryOpenPreauths():
            return await terminal.open_preauthorizations()
        case c.ShowReceipt(display=True):
            return await terminal.display(cmd.lines, 60)
        case c.ShowReceipt():
            return await terminal.print_text(cmd.lines)
        case c.Preauthorize():
            return await terminal.preauthorize(
                Money(cmd.amount_minor, cmd.currency), cmd.reference, persist
            )
        case c.TopUp():
            return await terminal.add_hold(
                cmd.ref,
                cmd.trace_no,
                Money(cmd.amount_minor, cmd.currency),
                cmd.reference,
                persist,
            )
        case c.Capture():
            return await terminal.capture(
                cmd.ref,
                Money(cmd.held_minor, cmd.currency),
                Money(cmd.amount_minor, cmd.currency),
                cmd.reference,
                persist,
                cmd.exact,
            )
        case c.Release():
            return await terminal.release(cmd.ref, Money(cmd.held_minor, cmd.currency), persist)
        case c.RefundPayment(method="reversal", ref=str(ref)):
            return await terminal.reverse(ref, persist)
        case c.RefundPayment():
            return await terminal.refund(Money(cmd.amount_minor, cmd.currency), persist)
    raise AssertionError(f"not a terminal command: {cmd}")


async def last_result(terminal: PaymentTerminal) -> e.LastResult | None:
    """The terminal's repeat of its last result (evidence for a lost capture or pre-auth)."""
    try:
        last = await terminal.last_result()
    except StoreError:
        raise
    except Exception:  # evidence is optional: without it nothing is booked
        _LOGGER.exception("engine.last_result_failed", extra={"terminal": terminal.name})
        return None
    if last.outcome is Outcome.UNKNOWN or (last.result_code is None and not last.approved):
        return None  # ZVT: no result code is no result; nexo has none, its approvals are answers
    amount = last.amount.minor if last.amount else None
    return e.LastResult(
        approved=last.approved,
        ref=last.ref,
        amount_minor=amount,
        trace_no=last.trace_no,
        ref_display=last.ref_display,
    )


def result_event(
    cmd: c.TerminalCommand, event_id: str, result: TerminalResult
) -> e.TerminalResultArrived:
    """The session's event for the result of one of its money commands."""
    if isinstance(cmd, c.RefundPayment):
        op = Operation.REVERSAL if cmd.method == "reversal" else Operation.REFUND
    else:
        op = {
            c.Preauthorize: Operation.PREAUTHORIZE,
            c.TopUp: Operation.TOPUP,
            c.Capture: Operation.CAPTURE,
            c.Release: Operation.RELEASE,
        }[type(cmd)]
    card = {}
    if result.card is not None:
        card = {
            k: v
            for k, v in (
                ("masked_pan", result.card.masked_pan),
                ("brand", result.card.brand),
                ("aid", result.card.aid),
            )
            if v
        }
    for_ref = cmd.ref if isinstance(cmd, c.Capture | c.Release | c.TopUp) else None
    return e.TerminalResultArrived(
        session_id=cmd.session_id,
        event_id=event_id,
        operation=op,
        outcome=result.outcome,
        amount_minor=result.amount.minor if result.amount else None,
        ref=result.ref,
        ref_display=result.ref_display,
        message=result.message,
        card=card,
        for_ref=for_ref,
        trace_no=result.trace_no,
    )


def answer_event(
    cmd: c.TerminalCommand,
    event_id: str,
    result: TerminalResult,
    last: e.LastResult | None,
    asked_at: datetime | None = None,
) -> e.Event | None:
    """What the session hears once ``cmd`` is done: an enquiry's report, a money command's
    result, nothing for a receipt shown or printed."""
    if isinstance(cmd, c.QueryOpenPreauths):
        return e.OpenPreauthsReported(
            session_id=cmd.session_id,
            event_id=event_id,
            refs=result.open_refs,
            failed=not result.approved,
            last=last,
            last_asked_at=asked_at,
            busy=result.outcome is Outcome.BUSY,
        )
    if isinstance(cmd, c.ShowReceipt):
        return None
    return result_event(cmd, event_id, result)
