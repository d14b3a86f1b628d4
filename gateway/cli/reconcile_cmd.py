"""``evpay reconcile [--from T] [--to T] [--json]`` and ``evpay reconcile --resolve KEY --reason
R``.

The report (gateway/payments/reconcile.py) is printed, queued upstream for the CPO (custom
module DEEVPrecon, docs/RECONCILIATION.md), and the command exits 1 while anything is
unexplained. A technician who has explained a finding marks it resolved, with the reason, in
the journal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.journal_cmd import when
from gateway.cli.stores import open_existing
from gateway.errors import BadInput

if TYPE_CHECKING:
    from gateway.payments.reconcile import Facts, Report
    from gateway.store import Store

_CLEAN, _UNEXPLAINED = 0, 1
# Findings about what a session owes, and which part of its debt a resolution settles.
_DEBTS = {"owed_overdue": "owed", "capture_unconfirmed": "owed", "shortfall": "shortfall"}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rec = commands.add_parser(
        "reconcile", help="compare terminal totals, journal, charger and CPO; exit 1 if unexplained"
    )
    rec.add_argument("--from", dest="start", type=when, help="ISO time (default: 24 hours ago)")
    rec.add_argument("--to", dest="end", type=when, help="ISO time, exclusive (default: now)")
    rec.add_argument("--json", action="store_true")
    rec.add_argument("--config", type=Path, required=True)
    rec.add_argument(
        "--resolve", metavar="KEY", help="mark a finding explained (with --reason), in the journal"
    )
    rec.add_argument("--reason", help="why the finding is explained")
    rec.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.resolve:
        return _resolve(args)
    if args.reason:
        raise BadInput("--reason goes with --resolve KEY")
    return _report(args)


def _report(args: argparse.Namespace) -> int:
    from drivers.money import Money
    from gateway.payments.reconcile import reconcile
    from gateway.settings import load_settings

    now = datetime.now(UTC)
    end = args.end or now
    start = args.start or end - timedelta(hours=24)
    if start >= end:
        raise BadInput("--from must be before --to")
    settings = load_settings(args.config)
    site = settings.site.id
    store = open_existing(args.config, write=True)
    try:
        report = reconcile(load_facts(store, start, end, now, upstream=settings.upstream.enabled))
        queue_report(store, site, report)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(
            f"reconciliation {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC: "
            f"{report.sessions} sessions, "
            f"{report.batches} end-of-day batches, {len(report.findings)} findings, "
            f"{len(report.unexplained)} unexplained"
        )
        for f in report.findings:
            money = (
                f" {Money(abs(f.amount_minor), f.currency)}"
                if f.amount_minor and f.currency
                else ""
            )
            state = f"resolved: {f.resolved}" if f.resolved else "UNEXPLAINED"
            print(f"  [{state}] {f.kind}{money}: {f.detail}")
            print(
                f"      key {f.key}" + (f"; sessions {', '.join(f.sessions)}" if f.sessions else "")
            )
    return _UNEXPLAINED if report.unexplained else _CLEAN


def _resolve(args: argparse.Namespace) -> int:
    from gateway.payments.events import DebtResolved
    from gateway.runtime.engine_host import EngineHost
    from gateway.runtime.engine_setup import build_policy
    from gateway.settings import load_settings
    from gateway.store import JournalEntry, Step

    reason = " ".join(str(args.reason or "").split())
    if not reason:
        raise BadInput("--reason must say why the difference is explained")
    settings = load_settings(args.config)
    store = open_existing(args.config, write=True)
    try:
        digest = hashlib.sha256(f"{args.resolve}\x00{reason}".encode()).hexdigest()[:16]
        entry = JournalEntry("reconcile", args.resolve, "resolved", {"reason": reason})
        new = store.apply(Step(f"resolve:{digest}", journal=[entry]))
        kind, _, session_id = str(args.resolve).partition(":")
        if kind in _DEBTS and session_id:
            # the debt itself is settled by the engine (journaled), so owed, ``sessions
            # --owing`` and evpay_owed_minor follow the technician's explanation
            host = EngineHost(store, build_policy(settings), lambda: datetime.now(UTC))
            host.handle(
                DebtResolved(
                    session_id=session_id,
                    event_id=f"resolve:{digest}",
                    reason=reason,
                    part=_DEBTS[kind],
                )
            )
    finally:
        store.close()
    print(
        f"{args.resolve}: resolved ({reason})"
        if new
        else f"{args.resolve}: already resolved with this reason"
    )
    return _CLEAN


def load_facts(
    store: Store, start: datetime, end: datetime, now: datetime, *, upstream: bool = True
) -> Facts:
    """What the store knows for the period, as the pure reconciliation's facts. Without an
    upstream nothing is acknowledged by anyone, so nothing is reported as unacknowledged."""
    from gateway.ocpi.charger import session_id_of
    from gateway.payments.reconcile import (
        BatchFacts,
        Facts,
        OverdueModification,
        UnclaimedWebhook,
        session_facts,
    )
    from gateway.runtime.acquirer_outcomes import split_key

    sessions = [session_facts(r) for r in store.sessions_between(start, end)]
    # One batch's facts per currency it holds: totals are per card group and currency.
    batches = [
        BatchFacts(
            b["terminal"],
            b["period_start"],
            b["at"],
            cur,
            {
                t["brand"]: (int(t["count"]), int(t["amount_minor"]))
                for t in b["totals"]
                if t.get("currency", b["currency"]) == cur
            },
        )
        for b in store.end_of_day_batches(start, end)
        for cur in sorted({b["currency"], *(t.get("currency", b["currency"]) for t in b["totals"])})
    ]
    # A batch closed in the window covers a period that began before it (yesterday's end of
    # day): its payments are compared with every session of that period, not only with those
    # that changed in the window.
    opened = [b.period_start or datetime.min.replace(tzinfo=UTC) for b in batches]
    earliest = min(opened, default=start)
    in_batches = (
        [session_facts(r) for r in store.sessions_between(earliest, end)]
        if earliest < start
        else []
    )
    references = [
        str(c["payload"].get("authorization_reference") or "")
        for c in store.inbox("cdr", limit=1_000_000)
        if start <= c["received_at"] < end
    ]
    cdrs = [(ref, session_id_of(ref)) for ref in references]
    waiting: dict[str, tuple[str, datetime]] = {}
    for status in ("pending", "dead") if upstream else ():
        for m in store.outbox.list(status=status, kind="session.outcome", limit=1_000_000):
            waiting[str(m.payload.get("session_id"))] = (status, m.created_at)
    resolutions = {
        j["entity_id"]: str(j["data"].get("reason", ""))
        for j in store.journal_of("reconcile")
        if j["kind"] == "resolved"
    }
    seen = {s.id for s in sessions}
    missing = [
        OverdueModification(
            m.modification.command_key,
            m.modification.kind,
            named[0] if (named := split_key(m.modification.command_key)) else None,
            m.deadline or now,
            m.modification.amount.minor if m.modification.amount else 0,
            m.modification.amount.currency if m.modification.amount else "",
        )
        for m in store.acquirer.overdue(now)
        if not _settled_by_hand(store, m.modification.command_key)
    ]
    unclaimed = [
        UnclaimedWebhook(
            w.event_code,
            w.psp_reference,
            w.original_reference,
            w.amount_minor or 0,
            w.currency or "",
        )
        for w in store.acquirer.unclaimed(start, end)
    ]
    return Facts(
        start,
        end,
        now,
        sessions,
        batches,
        cdrs,
        waiting,
        resolutions,
        batch_sessions=[s for s in in_batches if s.id not in seen],
        missing_webhooks=missing,
        unclaimed_webhooks=unclaimed,
    )


def _settled_by_hand(store: Store, command_key: str) -> bool:
    """Is this the refund a person settled (``evpay sessions refund-resolve``)? Its outcome is
    then known to us: no longer an unknown missing webhook (a late webhook that says otherwise
    is a discrepancy on the session)."""
    from gateway.runtime.acquirer_outcomes import split_key

    named = split_key(command_key)
    if named is None or named[1] != "refund":
        return False
    row = store.session(named[0])
    refunds = row["data"].get("refunds", ()) if row is not None else ()
    return any(r.get("id") == named[2] and r.get("settled_by") for r in refunds)


def queue_report(store: Store, site: str, report: Report) -> None:
    """Queue the report for the CPO; the same report again is not queued twice."""
    from gateway.store import JournalEntry, OutboxMessage, Step

    body = report.to_json()
    report_id = f"{site}-{report.start:%Y%m%dT%H%M}-{report.end:%Y%m%dT%H%M}"[:64]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    payload = {"report_id": report_id, "site": site, **body}
    message = OutboxMessage(
        f"report:{report_id}:{digest}", f"report:{report_id}", "reconcile.report", payload
    )
    entry = JournalEntry(
        "reconcile",
        report_id,
        "report",
        {"unexplained": len(report.unexplained), "findings": len(report.findings)},
    )
    store.apply(Step(f"report:{report_id}:{digest}", journal=[entry], outbox=[message]))
