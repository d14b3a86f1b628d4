"""Does a closed batch's totals match the journal? The terminal's totals per card group and
currency against the journal's captures in the batch's period (a reversal in the same period
takes the capture out; a refund lowers the amount): ``missing_in_terminal_totals``,
``missing_in_journal``, ``amount_mismatch``.

ZVT's end of day (06 50) gives, per card group, the number of payments in ONE binary byte and
the turnover in 6 bytes BCD (BMP 60, individual totals; EVerest's `SingleAmounts` types the count
u8; docs/ZVT-VARIANTS.md, section 6). A batch with more than 255 payments of one group therefore
cannot carry its count: a terminal's one-byte counter wraps (300 is sent as 44), one that
saturates sends 255 (no source read says which; both are read here, ``terminal_count``). The
turnover has room for any batch and is the evidence; the count is checked as far as one byte
can check it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from gateway.payments.reconcile_facts import BatchFacts, Finding, SessionFacts

# What one byte counts: a terminal's count of a card group's payments is modulo this.
COUNT_MODULUS = 0x100


def terminal_count(sent: int, *, journal: int) -> int:
    """The number of payments the terminal's count ``sent`` stands for, read against the
    journal's ``journal``. A count of one byte that the journal's number does not fit in is the
    number it wrapped from closest to the journal's (44 with 300 in the journal: 300; 45: 301),
    or, saturated (255), the journal's own: either way the turnover decides whether the batch
    agrees, and a difference is still classified by how many payments it is."""
    if journal < COUNT_MODULUS or sent >= COUNT_MODULUS:
        return sent
    if sent == COUNT_MODULUS - 1:
        return journal  # saturated: at least 255, no more said
    base = journal - journal % COUNT_MODULUS + sent
    return min(
        (base - COUNT_MODULUS, base, base + COUNT_MODULUS),
        key=lambda n: (abs(n - journal), n),
    )


BATCH_KINDS = frozenset({"missing_in_terminal_totals", "missing_in_journal", "amount_mismatch"})


def batch_findings(batch: BatchFacts, sessions: Sequence[SessionFacts]) -> list[Finding]:
    """The terminal's totals for one closed batch against the journal's for the same period."""
    count, amount, members = journal_totals(batch, sessions)
    out = []
    for brand in sorted(set(count) | set(amount) | set(batch.totals)):
        sent, t_amount = batch.totals.get(brand, (0, 0))
        j_count, j_amount = count.get(brand, 0), amount.get(brand, 0)
        # the count in one byte: past 255 it is read against the journal's (terminal_count);
        # a group with no turnover (or not reported) booked nothing, whatever the journal says
        t_count = terminal_count(sent, journal=j_count) if t_amount else sent
        if (t_count, t_amount) == (j_count, j_amount):
            continue
        # per currency: one end of day's totals in two currencies are two findings, each
        # resolved on its own
        key = f"{batch.terminal}:{batch.at.isoformat()}:{brand}:{batch.currency}"
        said = (
            f"terminal {batch.terminal}, batch closed {batch.at:%Y-%m-%d %H:%M}, {brand}: "
            f"terminal {t_count}{f' (sent as {sent})' if sent != t_count else ''} "
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
