"""What the terminal's end-of-day totals prove about captures whose outcome we never saw.

A capture that ended ``capture_unconfirmed`` (its answer lost, the hold gone, no result of its
own to show) was either booked by the terminal or not. The end of day (ZVT 06 50) counts what
the terminal booked in the closed batch per card group (BMP 60: count and amount). What the
terminal counted beyond the journal's own captures of that batch is what is left to explain,
and the unconfirmed captures of the batch are the only candidates for it.

The rule, per card group: the subsets of the group's candidates whose sum is exactly the amount
left to explain. The amount only: the terminal counts one booking per hold, the journal one
payment per session, so the counts differ for a session paid from several holds (issue 26,
item 15) while the amounts agree. Exactly one such subset decides: its members were captured, every
other candidate of the group was not. None, or more than one (two captures of the same amount
and one left to explain), decides nothing: the captures stay unconfirmed, listed by
reconciliation, for a person with the terminal's journal. The rule is pure and kept here, in one
place, so that it can be read and tested alone.

The subsets are counted, not listed: the ways to reach each sum, stopped at two (a subset-sum
table of candidates x amount cells). Listing them capped a batch at 12 candidates, and the full
crash run's one t1 batch of 85 lost captures was judged "no way to explain" although the
difference (8408) was exactly all of them -- the only subset there is, the amounts being
positive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

# Above this many cells (candidates x minor units left to explain) in one card group of one batch
# the subsets are not counted (a byte a cell; about a second of CPU at the bound): such a batch
# decides nothing, said as such, and is left to a person. 85 lost captures and 84.08 EUR take 0.7 M.
SUBSET_CELLS_MAX = 1_000_000


class Verdict(StrEnum):
    CAPTURED = "captured"
    NOT_CAPTURED = "not_captured"
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True, kw_only=True)
class Unconfirmed:
    """A capture the terminal may or may not have booked in the batch."""

    session_id: str
    group: str  # the card group the terminal totals it under (BMP 60)
    amount_minor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    verdict: Verdict
    evidence: str  # what decided it, for the journal


Counted = Mapping[str, tuple[int, int]]  # card group -> (count, amount)


def decide_by_totals(
    candidates: Sequence[Unconfirmed], *, terminal: Counted, journal: Counted
) -> dict[str, Decision]:
    """Each candidate's verdict from the terminal's and the journal's totals of one batch.

    "Not captured" also needs every other group of the batch explained: a card the terminal
    totals under another group than ours (a V PAY card we call visa, its "other") leaves its
    capture unexplained there, and nothing in its own group."""
    out = _by_group(candidates, terminal=terminal, journal=journal)
    groups = {c.group for c in candidates}
    elsewhere = sorted(
        g
        for g in set(terminal) | set(journal)
        if g not in groups and terminal.get(g, (0, 0))[1] != journal.get(g, (0, 0))[1]
    )
    elsewhere += sorted(
        {c.group for c in candidates if out[c.session_id].verdict is Verdict.UNDECIDED}
    )
    for sid, d in out.items():
        others = [g for g in elsewhere if g != _group(candidates, sid)]
        if d.verdict is Verdict.NOT_CAPTURED and others:
            said = f"{d.evidence}; but {', '.join(others)} unexplained in the batch: undecided"
            out[sid] = Decision(verdict=Verdict.UNDECIDED, evidence=said)
    return out


def _group(candidates: Sequence[Unconfirmed], session_id: str) -> str:
    return next(c.group for c in candidates if c.session_id == session_id)


def _by_group(
    candidates: Sequence[Unconfirmed], *, terminal: Counted, journal: Counted
) -> dict[str, Decision]:
    out: dict[str, Decision] = {}
    for group in sorted({c.group for c in candidates}):
        members = [c for c in candidates if c.group == group]
        t_count, t_amount = terminal.get(group, (0, 0))
        j_count, j_amount = journal.get(group, (0, 0))
        amount = t_amount - j_amount
        said = (
            f"end-of-day totals, {group}: terminal {t_count} for {t_amount}, "
            f"journal {j_count} for {j_amount}"
        )
        if len(members) * (max(amount, 0) + 1) > SUBSET_CELLS_MAX:
            ways, chosen = -1, None
        else:
            ways, chosen = _unique_subset(members, amount)
        if chosen is None:
            why = {-1: "too many candidates to", 0: "no way to"}.get(ways, "at least 2 ways to")
            for c in members:
                out[c.session_id] = Decision(
                    verdict=Verdict.UNDECIDED,
                    evidence=f"{said}: {why} explain the difference: undecided",
                )
            continue
        for c in members:
            if c.session_id in chosen:
                text = f"{said}: the one match is {c.amount_minor} of this capture"
                out[c.session_id] = Decision(verdict=Verdict.CAPTURED, evidence=text)
            else:
                text = f"{said}: the terminal counted no capture of {c.amount_minor} for it"
                out[c.session_id] = Decision(verdict=Verdict.NOT_CAPTURED, evidence=text)
    return out


def _unique_subset(
    members: Sequence[Unconfirmed], amount: int
) -> tuple[int, frozenset[str] | None]:
    """How many subsets of ``members`` sum to ``amount`` (0, 1, or 2 for two or more), and the
    one when there is exactly one. ``ways[i][s]``: the subsets of the first ``i`` members that
    sum to ``s``, counted up to 2; the single subset is read back from the table."""
    if amount < 0:
        return 0, None
    if any(c.amount_minor <= 0 for c in members):  # a capture of nothing is in and out alike
        return 2, None
    ways = [bytearray(amount + 1)]
    ways[0][0] = 1
    for c in members:
        prev, a = ways[-1], c.amount_minor
        row = bytearray(prev)
        for s in range(a, amount + 1):
            row[s] = min(2, prev[s] + prev[s - a])
        ways.append(row)
    count = ways[-1][amount]
    if count != 1:
        return count, None
    chosen, left = set(), amount
    for i in range(len(members), 0, -1):
        if ways[i - 1][left] != 1:  # one way in all and none without member i: it is in
            chosen.add(members[i - 1].session_id)
            left -= members[i - 1].amount_minor
    return 1, frozenset(chosen)
