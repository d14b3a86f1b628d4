"""``evpay store check|stats|prune``: the database file itself, for technicians.

``check`` runs SQLite's own check (quick_check, or the full integrity_check with ``--full``)
on demand: the daemon runs quick_check after READY, and before it only after an unclean stop.
``stats`` shows how big the file is, what it holds and the oldest rows it still keeps;
``prune`` archives now what the daemon would archive within the hour (retention).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gateway.cli.stores import open_existing
from gateway.errors import BadInput, StoreCorrupt

_DAMAGED = 74


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = commands.add_parser("store", help="the database file: check it, see what it holds")
    sub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="SQLite's check of the file (exit 0 sound, 74 damaged)")
    check.add_argument(
        "--full", action="store_true", help="integrity_check (slower) instead of quick_check"
    )
    stats = sub.add_parser("stats", help="size, free space, rows per table, the oldest rows kept")
    prune = sub.add_parser("prune", help="archive now what is older than [journal] retention_days")
    for p in (check, stats, prune):
        p.add_argument("--config", type=Path, required=True)
        p.add_argument("--json", action="store_true")
    check.set_defaults(handler=_check)
    stats.set_defaults(handler=_stats)
    prune.set_defaults(handler=_prune)


def _prune(args: argparse.Namespace) -> int:
    from gateway.payments.record import compact
    from gateway.settings import journal_signing_key, load_settings

    settings = load_settings(args.config)
    key = journal_signing_key(settings)
    days = settings.journal.retention_days
    if key is None or days is None:
        raise BadInput("retention needs [journal] signing_key and retention_days in the config")
    store = open_existing(args.config, write=True)
    cuts: list[dict[str, object]] = []
    try:
        while (
            done := store.prune_older_than(
                key, days=days, archive_dir=settings.journal.archive_dir, compact=compact
            )
        ).anything:
            cuts.append(
                {
                    "to_row": done.cut_seq,
                    "rows": done.journal_rows,
                    "archive": str(done.archive),
                    "sessions_compacted": done.sessions_compacted,
                }
            )
    finally:
        store.close()
    if args.json:
        print(json.dumps({"cuts": cuts}))
    elif not cuts:
        print(f"nothing older than {days} days to archive")
    for cut in [] if args.json else cuts:
        if cut["to_row"] is not None:
            print(
                f"archived journal rows up to {cut['to_row']} ({cut['rows']} rows) to "
                f"{cut['archive']}"
            )
        if cut["sessions_compacted"]:
            print(
                f"compacted {cut['sessions_compacted']} archived sessions (their full rows are in "
                f"the archive)"
            )
    return 0


def _check(args: argparse.Namespace) -> int:
    from gateway.settings import load_settings
    from gateway.store.db import quick_check_path

    started = time.monotonic()
    if args.full:
        store = open_existing(args.config)
        try:
            problem = store.integrity()
        finally:
            store.close()
    else:
        path = load_settings(args.config).storage.path
        open_existing(args.config).close()  # the same clear error when there is no database
        try:
            quick_check_path(path)
            problem = None
        except StoreCorrupt as exc:
            problem = str(exc)
    seconds = round(time.monotonic() - started, 3)
    kind = "integrity_check" if args.full else "quick_check"
    if args.json:
        print(
            json.dumps(
                {"check": kind, "ok": problem is None, "problem": problem, "seconds": seconds}
            )
        )
    else:
        print(f"{kind}: {'ok' if problem is None else 'DAMAGED: ' + problem} ({seconds} s)")
    return 0 if problem is None else _DAMAGED


def _stats(args: argparse.Namespace) -> int:
    store = open_existing(args.config)
    try:
        found = store.stats()
    finally:
        store.close()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    mb = 1024 * 1024
    print(
        f"{found['path']}: {found['file_bytes'] / mb:.1f} MiB ({found['free_bytes'] / mb:.1f} MiB "
        f"free inside), "
        f"WAL {found['wal_bytes'] / mb:.1f} MiB"
    )
    sessions = found["rows"]["sessions"]
    per = (found["file_bytes"] - found["free_bytes"]) / sessions if sessions else 0
    print(
        f"sessions: {sessions} ({found['final_sessions']} final), {per / 1024:.1f} KiB of the "
        f"file per session"
    )
    print("rows: " + ", ".join(f"{table} {count}" for table, count in found["rows"].items()))
    print(
        f"oldest kept: session created {found['oldest_session'] or '-'}, "
        f"journal row {found['oldest_journal_seq'] or '-'} at {found['oldest_journal_at'] or '-'}"
    )
    return 0
