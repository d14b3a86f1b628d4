"""One closed end-of-day batch against the journal: what the journal counts in the batch's
period per card group (``journal_totals``), and how the terminal's count is read against it
(``terminal_count``).

ZVT's end of day (06 50) gives, per card group, the number of payments in ONE binary byte and
the turnover in 6 bytes BCD (BMP 60, individual totals; EVerest's `SingleAmounts` types the count
u8; docs/ZVT-VARIANTS.md, section 6). A batch with more than 255 payments of one group therefore
cannot carry its count: a terminal's one-byte counter wraps (300 is sent as 44), one that
saturates sends 255 (no source read says which; both are read here). The turnover has room for
any batch and is the evidence; the count is checked as far as one byte can check it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from gateway.payments.reconcile_facts import BatchFacts, SessionFacts

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
