"""``evpay sessions refund ID --amount A --reason R`` asks for a refund of a settled session's
capture; ``evpay sessions refund-resolve ID REFUND --refunded|--not-refunded --evidence E``
settles by hand a refund whose outcome never reached us (``sent``, ``unknown``): the terminal
or the acquirer never said, and only a person can read its journal or report. A ``sent`` one
only once ``REFUND_RESOLVE_MIN_AGE`` has passed: a person must not race its real answer. Both
ask the engine's own rules (``corrections.refund_refusal``, ``corrections.refund_settled``), so the
CLI never refuses what the engine allows, nor the reverse."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from drivers.errors import AmountError
from drivers.money import Money
from gateway.cli.stores import open_existing
from gateway.errors import BadInput

if TYPE_CHECKING:  # the rest is imported where a command runs (gateway/cli/__init__.py)
    from gateway.payments.model import Session
    from gateway.payments.refunds import Refund
    from gateway.store import Store

_NOT_FOUND = 1
# A refund still ``sent`` may still be answered: the terminal's own deadline for an answer
# (``command_timeout_s``, 330 s by default) and the enquiry after a restart both run well within
# this. A person settling it sooner would race the real answer, so it is refused until then.
REFUND_RESOLVE_MIN_AGE = timedelta(minutes=15)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    """The two refund actions of ``evpay sessions``; returns their parsers (the caller adds
    ``--config`` and ``--json`` to each)."""
    refund = sub.add_parser("refund", help="give back part or all of a settled session's capture")
    refund.add_argument("id")
    refund.add_argument("--amount", required=True, help='e.g. "2.50", in the session\'s currency')
    refund.add_argument(
        "--reason", required=True, help="why (kept in the journal and sent to the CPO)"
    )
    refund.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for the terminal's answer"
    )
    refund.set_defaults(handler=_refund)
    said = (
        "settle a refund whose outcome never came (sent, unknown) from the terminal's journal or "
        "the acquirer's report; a sent refund only once "
        f"{REFUND_RESOLVE_MIN_AGE.total_seconds() / 60:.0f} min have passed since it was sent "
        "(its answer may still come)"
    )
    settle = sub.add_parser("refund-resolve", help=said, description=said)
    settle.add_argument("id")
    settle.add_argument("refund", help="the refund's id (evpay sessions show)")
    outcome = settle.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--refunded", action="store_true", help="the money was given back")
    outcome.add_argument("--not-refunded", action="store_true", help="no money moved")
    settle.add_argument(
        "--evidence", required=True, help="what shows it (kept in the journal with who said it)"
    )
    settle.add_argument("--ref", help="the refund's reference in that record, if it shows one")
    settle.add_argument("--by", help="who settles it (default: the user running the command)")
    settle.set_defaults(handler=_settle)
    return [refund, settle]


def _refund(args: argparse.Namespace) -> int:
    """Store the request; the daemon carries it out (now, or when it next runs). The same
    request twice (session, amount, reason) is one request."""
    from gateway.payments.corrections import refund_refusal
    from gateway.payments.record import from_json
    from gateway.store import InboxMessage, Step

    reason = " ".join(str(args.reason).split())
    if not reason:
        raise BadInput("--reason must say why")
    store = open_existing(args.config, write=True)
    try:
        row = store.session(args.id)
        if row is None:
            print(f"no session {args.id}")
            return _NOT_FOUND
        d = row["data"]
        try:
            amount = Money.parse(str(args.amount), d["currency"])
        except AmountError as exc:
            raise BadInput(f"--amount: {exc}") from None
        key = hashlib.sha256(f"{args.id}\x00{amount.minor}\x00{reason}".encode()).hexdigest()[:32]
        new = not store.step_applied(f"refund-request:{key}")
        if new:  # a repeat of a stored request is answered with its status, not checked again
            # the engine's own rule, asked here too so that a request it would refuse is
            # refused at once, with the figures
            why = refund_refusal(from_json(d), amount.minor)
            if why:
                raise BadInput(f"session {args.id}: {why}")
            payload = {
                "session_id": args.id,
                "amount_minor": amount.minor,
                "reason": reason,
                "source": "technician",
            }
            store.apply(
                Step(
                    f"refund-request:{key}",
                    inbox=[InboxMessage(key, "technician", "refund", payload)],
                )
            )
        status = _wait_refund(store, args.id, f"refund-{key}", args.wait)
    finally:
        store.close()
    said = "requested" if new else "already requested (the same request is carried out once)"
    print(
        json.dumps({"request": key, "new": new, "status": status})
        if args.json
        else f"refund {key}: {said}; status {status}"
    )
    return 0 if status in ("requested", "sent", "done") else 1


def _wait_refund(store: Store, session_id: str, refund_id: str, wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        row = store.session(session_id)
        found = next(
            (r for r in (row or {}).get("data", {}).get("refunds", ()) if r["id"] == refund_id),
            None,
        )
        status = found["status"] if found else "requested"
        if status not in ("requested", "sent") or time.monotonic() >= deadline:
            return str(status)
        time.sleep(0.2)


def _settle(args: argparse.Namespace) -> int:
    """A person's settlement of a refund of unknown outcome, as an engine step of the session
    (journaled with who and the evidence): the refund's status, the refunded figure, the debt
    and the CPO's refund message follow as if the terminal had answered."""
    from gateway.payments.corrections import waiting_refund_minor
    from gateway.payments.events import RefundSettled
    from gateway.payments.record import from_json
    from gateway.runtime.engine_host import EngineHost
    from gateway.runtime.engine_setup import build_policy
    from gateway.settings import load_settings

    evidence = " ".join(str(args.evidence).split())
    if not evidence:
        raise BadInput("--evidence must say what shows the refund's outcome")
    by = " ".join(str(args.by or _user()).split()) or "unknown"
    settings = load_settings(args.config)
    store = open_existing(args.config, write=True)
    try:
        row = store.session(args.id)
        if row is None:
            print(f"no session {args.id}")
            return _NOT_FOUND
        refund = _pending_refund(from_json(row["data"]), str(args.refund))
        _old_enough(refund, datetime.now(UTC))
        ref = str(args.ref) if args.ref else None
        text = f"{args.id}\x00{refund.id}\x00{args.refunded}\x00{evidence}\x00{by}\x00{ref}"
        event = RefundSettled(
            session_id=args.id,
            event_id=f"refund-resolve:{hashlib.sha256(text.encode()).hexdigest()[:24]}",
            refund_id=refund.id,
            refunded=bool(args.refunded),
            evidence=evidence,
            by=by,
            ref=ref,
        )
        host = EngineHost(store, build_policy(settings), lambda: datetime.now(UTC))
        handled = host.handle(event)
        after = handled.session
        if not handled.applied:  # the daemon stored its outcome meanwhile: nothing settled
            known = next((r for r in after.refunds if r.id == refund.id), None) if after else None
            now = known.status.value if known is not None else "gone"
            raise BadInput(
                f"refund {refund.id} is {now} now: its outcome became known, not settled"
            )
        waiting = waiting_refund_minor(after) if after is not None else 0
        if after is not None and waiting:
            _request_waiting_refund(store, after, waiting, refund.id)
    finally:
        store.close()
    if after is None:  # the row went between the read and the step: nothing settled
        print(f"no session {args.id}")
        return _NOT_FOUND
    settled = next((r for r in after.refunds if r.id == refund.id), refund)
    refunded, owed = after.refunded_minor, after.bill.owed_minor
    if args.json:
        said = {"refund": refund.id, "status": settled.status.value, "requested_minor": waiting}
        print(
            json.dumps({"session": args.id, **said, "refunded_minor": refunded, "owed_minor": owed})
        )
    else:
        print(
            f"refund {refund.id}: {settled.status.value} (settled by {by}); session {args.id} "
            f"refunded {Money(refunded, after.currency)}, owed {Money(owed, after.currency)}"
            + (
                f"; the corrected price's refund of {Money(waiting, after.currency)} is requested"
                if waiting
                else ""
            )
        )
    return 0


def _request_waiting_refund(store: Store, s: Session, amount_minor: int, settled: str) -> None:
    """The refund a corrected price waited for, stored as a request the daemon carries out
    (source ``cdr``: the debt counts it as the correction's), once per correction and refund
    settled (a first request refused while another refund was in flight is asked again when a
    person settles that one; the engine gives back what the correction asks then)."""
    from gateway.store import InboxMessage, Step

    text = f"{s.id}\x00{s.bill.correction_waiting}\x00{settled}"
    key = hashlib.sha256(text.encode()).hexdigest()[:32]
    payload = {
        "session_id": s.id,
        "amount_minor": amount_minor,
        "reason": "corrected CDR",
        "source": "cdr",
    }
    store.apply(
        Step(f"refund-request:{key}", inbox=[InboxMessage(key, "technician", "refund", payload)])
    )


def _pending_refund(session: Session, named: str) -> Refund:
    """The session's refund of that id (or of that request key), if its outcome is unknown."""
    refunds = session.refunds
    found = next((r for r in refunds if r.id in (named, f"refund-{named}")), None)
    if found is None:
        ids = ", ".join(r.id for r in refunds) or "none"
        raise BadInput(f"no refund {named} on this session (its refunds: {ids})")
    if not found.pending:
        raise BadInput(
            f"refund {found.id} is {found.status.value}: its outcome is known, only a sent or "
            "unknown refund is settled by hand"
        )
    return found


def _old_enough(refund: Refund, now: datetime) -> None:
    """A ``sent`` refund is settled by hand only once ``REFUND_RESOLVE_MIN_AGE`` has passed
    since it was sent: before that its answer may still come (an ``unknown`` one is past it)."""
    from gateway.payments.refunds import RefundStatus

    age = now - refund.at
    if refund.status is RefundStatus.SENT and age < REFUND_RESOLVE_MIN_AGE:
        wait = int((REFUND_RESOLVE_MIN_AGE - age).total_seconds()) + 1
        minimum = int(REFUND_RESOLVE_MIN_AGE.total_seconds() // 60)
        if age < timedelta(0):  # stamped by a clock ahead of this one: the sending time counts
            raise BadInput(
                f"refund {refund.id} is stamped sent at {refund.at.isoformat()}, "
                f"{int(-age.total_seconds())} s in the future of this host's clock (check both "
                f"clocks): a sent refund is settled by hand only {minimum} min after it was "
                f"sent; wait {wait} s more (or until the daemon marks it unknown)"
            )
        raise BadInput(
            f"refund {refund.id} was sent {int(age.total_seconds())} s ago and its answer may "
            f"still come: a sent refund is settled by hand only {minimum} min after it was "
            f"sent; wait {wait} s more (or until the daemon marks it unknown)"
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without one)
        return "unknown"
