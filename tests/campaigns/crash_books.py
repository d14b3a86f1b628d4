"""What the crash campaign compares at the end: its figures, the store against the terminals'
own books and the CPO's records (``check``), and the terminals' end of day with the daemon
stopped (``end_of_day``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_setup import build_policy, build_terminals
from gateway.settings import load_settings
from gateway.store import Store
from tests.campaigns import scan
from tests.campaigns.books import BookedHold, stored_ref

if TYPE_CHECKING:
    from tests.campaigns.crash import Campaign


@dataclass
class Figures:
    kills: int = 0
    dangerous_kills: int = 0
    moments: Counter[str] = field(default_factory=Counter)  # the dangerous kills, by moment
    plugged: int = 0
    sessions: int = 0
    completed: int = 0
    captured_minor: int = 0
    booked_minor: int = 0  # what the terminals' own books say was booked
    holds: int = 0
    open_holds: int = (
        0  # still open at the terminals at the end (each owed visibly, or a violation)
    )
    fac_posts: int = 0
    unconfirmed: int = (
        0  # captures the terminal booked whose evidence never reached the gateway (owed, visibly)
    )
    unconfirmed_sessions: int = 0  # sessions that ended capture_unconfirmed (their FAC held)
    ends_of_day: int = 0  # terminals closed after the last kill
    batches_closed: int = 0  # by the daemon's end of day during the run (nights.py)
    nights_missed: int = 0  # nights that ended without their end of day
    unconfirmed_after_end_of_day: int = 0  # still unconfirmed once the totals were read
    partitions: list[str] = field(default_factory=list)  # what was cut, how long, how long to drain
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)


async def end_of_day(c: Campaign) -> None:
    """After the books are compared: each terminal's end of day as the daemon's runner makes
    it (06 50, then the host stores the batch and decides the unconfirmed captures by its
    totals), with the daemon stopped. Counted: the sessions still unconfirmed after it; and
    every outcome it released must agree with what the terminal booked."""
    c.figures.batches_closed = sum(c.nights.batches.values())
    c.figures.nights_missed = c.nights.missed
    book = c.book()  # before the end of day closes the terminals' batches
    booked = {key: h.booked for key, h in by_generation(book) if h.state == "booked"}
    settings = load_settings(c.config)
    store = Store.open(c.dir / "evpay.sqlite3")
    try:
        host = EngineHost(store, build_policy(settings), lambda: datetime.now(UTC))
        before = {r["id"] for r in store.sessions(limit=1_000_000)}
        for name, terminal in build_terminals(settings).items():
            try:
                async with asyncio.timeout(30):
                    await terminal.connect()
                    result = await terminal.end_of_day()
            finally:
                await terminal.close()
            if result.approved:
                host.record_end_of_day(name, result, "EUR")
                c.figures.ends_of_day += 1
        rows = store.sessions(limit=1_000_000)
        outcomes = {
            str(m.payload["session_id"]): m.payload
            for m in store.outbox.list(kind="session.outcome", limit=1_000_000)
        }
    finally:
        store.close()
    for row in rows:
        assert row["id"] in before
        c.figures.unconfirmed_after_end_of_day += row["state"] == "capture_unconfirmed"
    for key, (sid, hold, data) in stored_holds(rows, book, []).items():
        out = outcomes.get(sid)
        took = booked.get(key)
        if took and out is not None and out["state"] == "capture_failed":
            c.figures.violations.append(
                f"session {sid}: its outcome says capture_failed after the end of "
                f"day, {data['terminal']} booked {took} on hold {stored_ref(hold)}"
            )
        if out is not None and hold["captured_minor"] and not took:
            c.figures.violations.append(
                f"session {sid}: captured {hold['captured_minor']} after the end "
                f"of day, {data['terminal']} booked nothing on hold {stored_ref(hold)}"
            )


def check(c: Campaign) -> None:
    f = c.figures
    store = Store.open(c.dir / "evpay.sqlite3", read_only=True)
    try:
        rows = store.sessions(limit=1_000_000)
        report = store.verify_journal()
    finally:
        store.close()
    if not report.ok:
        f.violations.append(f"the journal does not verify: {report.findings[0].text}")
    for row in rows:
        f.sessions += 1
        if not row["final"]:
            f.violations.append(f"session {row['id']} is left {row['state']}")
        if row["state"] == "completed":
            f.completed += 1
        f.unconfirmed_sessions += row["state"] == "capture_unconfirmed"
    book = c.book()
    stored = stored_holds(rows, book, f.violations)
    booked_total = unconfirmed_total = 0
    for key, tx in by_generation(book):
        terminal = tx.terminal
        f.holds += 1
        found = stored.get(key)
        if tx.state == "booked":
            booked_total += tx.booked
            fac = c.cpo.state.facs.get(found[0][:36]) if found is not None else None
            if fac is not None and fac.get("capture_status_code") == "FAILED":
                f.violations.append(  # the CPO would charge the driver again
                    f"session {found[0] if found else '?'}: the FAC says FAILED, "
                    f"{terminal} booked {tx.booked} on hold {tx.ref}"
                )
            if found is None:
                f.violations.append(
                    f"{terminal} booked {tx.booked} on hold {tx.ref}: no session records it"
                )
            elif found[1]["status"] == "unconfirmed" and found[1]["target_minor"] == tx.booked:
                f.unconfirmed += 1  # no evidence reached the gateway: owed, visibly
                unconfirmed_total += tx.booked
            elif found[1]["captured_minor"] != tx.booked:
                f.violations.append(
                    f"session {found[0]} captured {found[1]['captured_minor']} on {terminal} "
                    f"hold {tx.ref}, the terminal booked {tx.booked}"
                )
        elif tx.state == "open":
            f.open_holds += 1
            owed = found is not None and (
                found[2].get("owed_minor") or found[1]["status"] in ("lapsed", "unconfirmed")
            )
            if not owed:
                f.violations.append(
                    f"{terminal} hold {tx.ref} ({tx.amount}) is left open, owed by nobody"
                )
        elif found is not None and found[1]["captured_minor"]:
            f.violations.append(
                f"session {found[0]} claims a capture on {terminal} hold {tx.ref}, "
                "which the terminal released"
            )
    f.captured_minor = sum(h["captured_minor"] for _, h, _ in stored.values())
    f.booked_minor = booked_total
    if f.captured_minor + unconfirmed_total != booked_total:
        f.violations.append(
            f"the store captured {f.captured_minor} in all (and {unconfirmed_total} unconfirmed), "
            f"the terminals booked {booked_total}"
        )
    f.fac_posts = len(c.cpo.state.fac_posts)
    for sid, _hold, data in stored.values():
        if data["state"] == "completed" and data.get("captured_minor"):
            fac = c.cpo.state.facs.get(sid[:36])
            if fac is None:
                f.violations.append(f"session {sid}: no FAC at the CPO")
            elif gross_minor(fac["total_costs"]) != data["captured_minor"]:
                f.violations.append(
                    f"session {sid}: the FAC says {fac['total_costs']}, "
                    f"the session captured {data['captured_minor']}"
                )
    c.log.flush()
    hits = scan.scan_paths(
        [c.dir / "evpay.sqlite3", c.dir / "daemon.log"],
        secrets=c.secrets(),
    )
    f.violations += [f"card data or a secret: {h}" for h in hits]


def gross_minor(price: dict[str, Any]) -> int:
    """An OCPI 2.3.0 Price (before_taxes and the taxes' amounts) in cents."""
    gross = Decimal(str(price["before_taxes"])) + sum(
        Decimal(str(t["amount"])) for t in price.get("taxes") or ()
    )
    return int(gross * 100)


def main_figures(f: Figures) -> str:
    if f.partitions:
        return (
            f"{len(f.partitions)} partitions ({'; '.join(f.partitions[:4])}{' …' if len(f.partitions) > 4 else ''}), "
            f"{f.plugged} EVs plugged in, {f.sessions} sessions ({f.completed} completed), {f.holds} holds, "
            f"{f.captured_minor / 100:.2f} EUR captured, {f.fac_posts} FAC POSTs, {f.seconds:.0f} s; "
            f"{len(f.violations)} violation(s)"
        )
    moments = ", ".join(f"{n} {k}" for k, n in sorted(f.moments.items()))
    return (
        f"{f.kills} kills ({f.dangerous_kills} at a dangerous moment: {moments}), {f.plugged} EVs plugged in, "
        f"{f.sessions} sessions ({f.completed} completed), {f.holds} holds at the terminals "
        f"({f.open_holds} left open), "
        f"{f.captured_minor / 100:.2f} EUR captured (the terminals booked "
        f"{f.booked_minor / 100:.2f}), {f.unconfirmed} captures unconfirmed "
        f"({f.unconfirmed_sessions} sessions capture_unconfirmed, "
        f"{f.unconfirmed_after_end_of_day} after {f.ends_of_day} ends of day; "
        f"{f.batches_closed} batches closed by the daemon during the run, "
        f"{f.nights_missed} nights without one), "
        f"{f.fac_posts} FAC POSTs, "
        f"{f.seconds:.0f} s; {len(f.violations)} violation(s)"
    )


Generation = tuple[str, str, int]  # terminal, hold reference, how often the reference came before


def by_generation(book: list[BookedHold]) -> list[tuple[Generation, BookedHold]]:
    """The terminals' holds, each named by its reference and how many holds of the terminal had
    that reference before it: a ZVT receipt number (4 BCD digits) comes round again after 9,999
    receipts, in a later batch (``book`` is in the order the holds were made)."""
    seen: Counter[tuple[str, str]] = Counter()
    out = []
    for h in book:
        out.append(((h.terminal, h.ref, seen[h.terminal, h.ref]), h))
        seen[h.terminal, h.ref] += 1
    return out


def stored_holds(
    rows: list[dict[str, Any]], book: list[BookedHold], violations: list[str]
) -> dict[Generation, tuple[str, dict[str, Any], dict[str, Any]]]:
    """The store's holds named as ``by_generation`` names the terminals': sessions in the order
    they began. Two sessions holding one reference are one hold claimed twice (a violation)
    unless the terminal itself gave that reference to as many holds."""
    given = Counter((h.terminal, h.ref) for h in book)
    seen: Counter[tuple[str, str]] = Counter()
    last: dict[tuple[str, str], str] = {}
    out: dict[Generation, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r["created_at"]):
        data = row["data"]
        for hold in data.get("holds", []):
            ref = (data["terminal"], stored_ref(hold))
            if ref in last and last[ref] != row["id"]:
                if seen[ref] >= given[ref]:
                    violations.append(
                        f"sessions {last[ref]} and {row['id']} both hold {ref[0]} {ref[1]}"
                    )
                else:
                    seen[ref] += 1
            elif ref not in last:
                seen[ref] += 1
            last[ref] = row["id"]
            out[(*ref, seen[ref] - 1)] = (row["id"], hold, data)
    return out
