"""Does a closed batch's totals match the journal? The terminal's totals per card group and
currency against the journal's captures in the batch's period (a reversal in the same period
takes the capture out; a refund lowers the amount): ``missing_in_terminal_totals``,
``missing_in_journal``, ``amount_mismatch``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from gateway.payments.reconcile_facts import BatchFacts, Finding, SessionFacts

BATCH_KINDS = frozenset({"missing_in_terminal_totals", "missing_in_journal", "amount_mismatch"})


def batch_findings(batch: BatchFacts, sessions: Sequence[SessionFacts]) -> list[Finding]:
    """The terminal's totals for one closed batch against the journal's for the same period."""
    count, amount, members = journal_totals(batch, sessions)
    out = []
    for brand in sorted(set(count) | set(amount) | set(batch.totals)):
        t_count, t_amount = batch.totals.get(brand, (0, 0))
        j_count, j_amount = count.get(brand, 0), amount.get(brand, 0)
        if (t_count, t_amount) == (j_count, j_amount):
            continue
        # per currency: one end of day's totals in two currencies are two findings, each
        # resolved on its own
        key = f"{batch.terminal}:{batch.at.isoformat()}:{brand}:{batch.currency}"
        said = (
            f"terminal {batch.terminal}, batch closed {batch.at:%Y-%m-%d %H:%M}, {brand}: "
            f"terminal {t_count} "
            f"for {t_amount}, journal {j_count} for {j_amount}"
        )
        if j_count > t_count:
            out.append(
                Finding(
                    f"missing_in_terminal_totals:{key}",
                    "missing_in_terminal_totals",
                    said,
                    tuple(members[brand]),
                    j_amount - t_amount,
                    batch.currency,
                )
            )
        elif t_count > j_count:
            out.append(
                Finding(
                    f"missing_in_journal:{key}",
                    "missing_in_journal",
                    said,
                    (),
                    t_amount - j_amount,
                    batch.currency,
                )
            )
        else:
            out.append(
                Finding(
                    f"amount_mismatch:{key}",
                    "amount_mismatch",
                    said,
                    tuple(members[brand]),
                    j_amount - t_amount,
                    batch.currency,
                )
            )
    return out


def journal_totals(
    batch: BatchFacts, sessions: Sequence[SessionFacts]
) -> tuple[dict[str, int], dict[str, int], dict[str, list[str]]]:
    """What the journal counts in one closed batch, per card group: the count and amount of
    the captures in its period, and the sessions that make them up."""
    start = batch.period_start or datetime.min.replace(tzinfo=batch.at.tzinfo)
    count: dict[str, int] = defaultdict(int)
    amount: dict[str, int] = defaultdict(int)
    members: dict[str, list[str]] = defaultdict(list)

    def within(at: datetime) -> bool:
        return start < at <= batch.at

    for s in sessions:
        if s.terminal != batch.terminal or s.currency != batch.currency:
            continue
        booked = [(at, a) for at, a in s.captures if within(at) and a]
        if not s.captures and s.captured_at is not None and within(s.captured_at):
            booked = [(s.captured_at, s.captured_minor)] * bool(s.captured_minor)
        taken = sum(a for _, a in booked)
        if booked and sum(a for at, a in s.reversed if within(at)) < taken:
            # a reversal in the same batch takes the payment out of it
            count[s.brand] += len(booked) if s.captures else s.bookings
            amount[s.brand] += taken
            members[s.brand].append(s.id)
        refunded = sum(a for at, a in s.refunded if within(at))
        if refunded:
            amount[s.brand] -= refunded
            members[s.brand].append(s.id)
    return count, amount, members
