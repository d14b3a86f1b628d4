"""``evpay outbox list|show|retry|dead``: the upstream backlog, for technicians."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.stores import open_existing

if TYPE_CHECKING:
    from gateway.store import StoredOutbox

_NOT_FOUND = 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outbox = commands.add_parser("outbox", help="upstream messages waiting, sent or dead-lettered")
    sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="messages, oldest first")
    listing.add_argument("--status", choices=("pending", "done", "dead"))
    listing.add_argument("--limit", type=int, default=100)
    show = sub.add_parser("show", help="one message with its payload")
    show.add_argument("message_id")
    retry = sub.add_parser("retry", help="send a waiting or dead message again now")
    retry.add_argument("message_id")
    dead = sub.add_parser("dead", help="dead-lettered messages and why")
    for p in (listing, show, retry, dead):
        p.add_argument("--config", type=Path, required=True)
        p.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    show.set_defaults(handler=_show)
    retry.set_defaults(handler=_retry)
    dead.set_defaults(
        handler=lambda a: _list(argparse.Namespace(**{**vars(a), "status": "dead", "limit": 1000}))
    )


def _row(m: StoredOutbox) -> str:
    return (
        f"{m.message_id:<44} {m.status:<8} attempts {m.attempts:<3} created "
        f"{m.created_at:%Y-%m-%d %H:%M:%S}"
        + (f"  last error: {m.last_error}" if m.last_error else "")
    )


def _list(args: argparse.Namespace) -> int:
    store = open_existing(args.config)
    try:
        messages = store.outbox.list(args.status, args.limit)
        backlog = store.outbox.backlog()
        upstream = store.upstream_status()
    finally:
        store.close()
    waiting = None
    if upstream is not None and not upstream["registered"]:
        waiting = f"waiting: upstream not registered — {upstream['reason']}"
    if args.json:
        rows = [
            {**asdict(m), **({"waiting": waiting} if waiting and m.status == "pending" else {})}
            for m in messages
        ]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    oldest = (
        f", oldest pending {backlog.oldest_pending:%Y-%m-%d %H:%M:%S}"
        if backlog.oldest_pending
        else ""
    )
    print(f"outbox: {backlog.pending} pending, {backlog.dead} dead{oldest}")
    if waiting and backlog.pending:
        print(waiting)
    for m in messages:
        print(_row(m) + (f"  ({waiting})" if waiting and m.status == "pending" else ""))
    return 0


def _show(args: argparse.Namespace) -> int:
    store = open_existing(args.config)
    try:
        message = store.outbox.get(args.message_id)
    finally:
        store.close()
    if message is None:
        print(f"no message {args.message_id}")
        return _NOT_FOUND
    if args.json:
        print(json.dumps(asdict(message), indent=2, default=str))
    else:
        print(_row(message))
        print(
            f"  kind {message.kind}, object {message.object_key}, next attempt "
            f"{message.next_attempt_at}"
        )
        print("  " + json.dumps(dict(message.payload), indent=2, default=str).replace("\n", "\n  "))
    return 0


def _retry(args: argparse.Namespace) -> int:
    store = open_existing(args.config, write=True)
    try:
        done = store.outbox.requeue(args.message_id, datetime.now(UTC))
    finally:
        store.close()
    print(
        f"{args.message_id}: "
        f"{'queued to be sent now' if done else 'not found among pending or dead messages'}"
    )
    return 0 if done else _NOT_FOUND
