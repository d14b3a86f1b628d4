"""``evpay sessions list|show ID``: charging sessions and their journal, read-only from the
store; ``refund`` and ``refund-resolve`` are in ``sessions_refund.py``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.money import Money
from gateway.cli import sessions_refund
from gateway.cli.stores import open_existing
from gateway.runtime.acquirer_runner import split_key
from gateway.store import Store

_NOT_FOUND = 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = commands.add_parser("sessions", help="inspect charging sessions and their journal")
    sub = sessions.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="recent sessions, newest first")
    listing.add_argument("--open", action="store_true", help="only sessions not yet final")
    listing.add_argument(
        "--owing",
        action="store_true",
        help="only sessions that owe money (uncaptured, unconfirmed, shortfall)",
    )
    listing.add_argument("--limit", type=int, default=50)
    show = sub.add_parser("show", help="one session with its payments and journal")
    show.add_argument("id")
    for p in (listing, show, *sessions_refund.register(sub)):
        p.add_argument("--config", type=Path, required=True)
        p.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    show.set_defaults(handler=_show)


def _money(minor: int, currency: str) -> str:
    return str(Money(minor, currency))


def _list(args: argparse.Namespace) -> int:
    store = open_existing(args.config)
    try:
        rows = store.sessions(open_only=args.open, owing=args.owing, limit=args.limit)
        waits = acquirer_waits(store, datetime.now(UTC))
    finally:
        store.close()
    if args.json:
        summaries = [{**_summary(r), "acquirer": waits.get(r["id"])} for r in rows]
        print(json.dumps(summaries, indent=2, default=str))
        return 0
    print(
        f"{'session':<34} {'state':<20} {'authorized':>12} {'captured':>12} {'released':>12} "
        f"{'owed':>12}  updated"
    )
    for r in rows:
        d = r["data"]
        cur = d["currency"]
        print(
            f"{r['id']:<34} {r['state']:<20} {_money(d['authorized_minor'], cur):>12} "
            f"{_money(d['captured_minor'], cur):>12} {_money(d['released_minor'], cur):>12} "
            f"{_money(d.get('owed_minor', 0), cur):>12}  {r['updated_at']:%Y-%m-%d %H:%M:%S}"
            + (f"  [{waits[r['id']]}]" if r["id"] in waits else "")
        )
    return 0


def acquirer_waits(store: Store, now: datetime) -> dict[str, str]:
    """What each session waits for at the acquirer: a modification not yet taken (the uplink is
    down), or taken and awaiting its webhook until a deadline (past it: a missing webhook)."""
    out: dict[str, str] = {}
    for m in store.acquirer.waiting():
        named = split_key(m.modification.command_key)
        if named is None:
            continue
        kind = m.modification.kind
        if m.status == "queued":
            error = f": {m.last_error}" if m.last_error else ""
            out[named[0]] = f"acquirer: {kind} queued, not yet taken{error}"
        elif m.deadline is not None and m.deadline <= now:
            out[named[0]] = f"acquirer: {kind} webhook missing since {m.deadline:%Y-%m-%d %H:%M:%S}"
        else:
            until = f" until {m.deadline:%Y-%m-%d %H:%M:%S}" if m.deadline else ""
            out[named[0]] = f"acquirer: awaiting the {kind} webhook{until}"
    return out


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    d = row["data"]
    keys = (
        "evse",
        "terminal",
        "currency",
        "authorized_minor",
        "captured_minor",
        "released_minor",
        "price_minor",
        "billed_energy_wh",
        "reference",
        "ref",
        "stop_reason",
    )
    extra = (
        "open_minor",
        "owed_minor",
        "shortfall_minor",
        "unpaid_energy_wh",
        "scheme",
        "expires_at",
        "invoice_reference",
        "receipt",
        "receipt_missing",
        "receipt_lines",
        "fiscal_fields",
        "refunds",
        "refunded_minor",
    )
    return {
        "id": row["id"],
        "state": row["state"],
        "final": row["final"],
        **{k: d[k] for k in keys},
        **{k: d.get(k) for k in extra},
        "holds": d.get("holds", []),
        "discrepancies": d.get("discrepancies", []),
        "card": d["card"],
        "notes": d["notes"],
        "updated_at": row["updated_at"],
    }


def _show(args: argparse.Namespace) -> int:
    store = open_existing(args.config)
    try:
        row = store.session(args.id)
        if row is None:
            print(f"no session {args.id}")
            return _NOT_FOUND
        payments = store.payments(args.id)
        journal = store.journal(args.id)
        client = store.session_origin(args.id)
        waits = acquirer_waits(store, datetime.now(UTC))
    finally:
        store.close()
    summary = {**_summary(row), "api_client": client, "acquirer": waits.get(row["id"])}
    if args.json:
        print(
            json.dumps(
                {"session": summary, "payments": payments, "journal": journal},
                indent=2,
                default=str,
            )
        )
        return 0
    cur = summary["currency"]
    print(f"session {row['id']}: {row['state']}{' (final)' if row['final'] else ''}")
    if summary["acquirer"]:
        print(f"  waiting: {summary['acquirer']}")
    print(
        f"  evse {summary['evse']} via terminal {summary['terminal']}, ref "
        f"{summary['ref']}, "
        f"reference {summary['reference']}"
    )
    if client is not None:
        print(f"  started over the local API by client {client or '(no client id: no tokens)'}")
    card = summary["card"]
    if card:
        print(f"  card {card.get('brand', '?')} {card.get('masked_pan', '')}")
    print(
        f"  energy {summary['billed_energy_wh'] / 1000:.3f} kWh, price "
        f"{_money(summary['price_minor'], cur)}"
    )
    print(f"  hold valid until {summary['expires_at'] or '-'} (scheme {summary['scheme'] or '?'})")
    for key in (
        "authorized_minor",
        "captured_minor",
        "released_minor",
        "open_minor",
        "owed_minor",
        "shortfall_minor",
    ):
        if summary[key] or key in ("authorized_minor", "captured_minor", "released_minor"):
            print(f"  {key.removesuffix('_minor'):<10} {_money(summary[key], cur)}")
    if summary["unpaid_energy_wh"]:
        print(
            f"  unpaid energy {summary['unpaid_energy_wh'] / 1000:.3f} kWh (delivered after the "
            f"hold was given back)"
        )
    for h in summary["holds"]:
        target = "-" if h["target_minor"] is None else _money(h["target_minor"], cur)
        print(
            f"  hold {h['ref']}: {_money(h['amount_minor'], cur)} {h['status']}, to "
            f"capture {target}, "
            f"captured {_money(h['captured_minor'], cur)}, released "
            f"{_money(h['released_minor'], cur)}"
        )
    for r in summary.get("refunds") or ():
        slip = f", terminal ref {r['ref']}" if r.get("ref") is not None else ""
        why = f" ({r['message']})" if r.get("message") and r["status"] != "done" else ""
        print(
            f"  refund {r['id']} {_money(r['amount_minor'], cur)} by {r['method']}: "
            f"{r['status']}{why}{slip}; "
            f"{r['source']}: {r['reason']}"
        )
    receipt = summary.get("receipt") or ""
    if receipt:
        missing = (
            f" (missing: {', '.join(summary['receipt_missing'])})"
            if summary.get("receipt_missing")
            else ""
        )
        print(
            f"  receipt {receipt}{missing}, invoice "
            f"{summary.get('invoice_reference') or summary['reference']}"
        )
        for line in summary.get("receipt_lines") or ():
            print(f"    | {line}")
    for note in summary["notes"]:
        print(f"  note: {note}")
    for discrepancy in summary["discrepancies"]:
        print(f"  discrepancy: {discrepancy}")
    print("  payments:")
    for p in payments:
        print(f"    {p['kind']:<8} {p['state']:<9} {_money(p['amount_minor'], p['currency'])}")
    print("  journal:")
    for j in journal:
        d = j["data"]
        print(
            f"    #{j['seq']:<5} {j['at']}  {j['kind']:<22} {d.get('from') or '-'} -> {d.get('to')}"
            + (f"  [{', '.join(d['commands'])}]" if d.get("commands") else "")
        )
    return 0
