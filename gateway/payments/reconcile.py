"""Reconciliation: where the terminal, the journal, the charger and the CPO disagree, say which
session, by how much, and why. Pure: facts in, a report out (the CLI loads the facts).

What is compared (docs/RECONCILIATION.md):
- each end-of-day batch's totals per card group against the journal's captures on that terminal
  in the batch's period (a reversal takes the capture out of the batch; a refund lowers its
  amount) → ``missing_in_terminal_totals``, ``missing_in_journal``, ``amount_mismatch``;
- sessions whose money is not settled → ``capture_unconfirmed``, ``owed_overdue`` (owed past
  the deadline), ``shortfall`` (priced above the hold), ``refund_unsettled``, ``refund_due``
  (captured above a corrected price, not given back), ``refund_other_card``;
- the charger against the bill → ``energy_mismatch`` (beyond the tolerance);
- the CPO → ``cdr_unpaid`` (a CDR for a session that captured nothing), ``not_acknowledged``
  (an outcome the CPO has not taken, past the deadline, or dead-lettered);
- the acquirer → ``missing_webhook`` (a modification it took whose webhook is past its deadline:
  never counted as done).
Each finding has a stable key; a technician who has explained one marks it resolved with a
reason (a journal entry), and it no longer counts as unexplained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from gateway.payments.batch_totals import BATCH_KINDS, batch_findings, journal_totals
from gateway.payments.reconcile_facts import (
    BatchFacts,
    Facts,
    Finding,
    OverdueModification,
    SessionFacts,
    UnclaimedWebhook,
    session_facts,
)

# The facts and findings (reconcile_facts.py) and the batch totals (batch_totals.py) are read
# through this module too: it is reconciliation's one way in.
__all__ = [
    "BatchFacts",
    "Facts",
    "Finding",
    "OverdueModification",
    "Report",
    "SessionFacts",
    "Tolerances",
    "UnclaimedWebhook",
    "journal_totals",
    "reconcile",
    "session_facts",
]


@dataclass(frozen=True, slots=True)
class Tolerances:
    energy_wh: int = 50
    owed_within: timedelta = timedelta(hours=24)
    acknowledged_within: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Report:
    start: datetime
    end: datetime
    sessions: int
    batches: int
    findings: tuple[Finding, ...]

    @property
    def unexplained(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.resolved is None)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "sessions": self.sessions,
            "batches": self.batches,
            "unexplained": len(self.unexplained),
            "findings": [f.to_json() for f in self.findings],
        }


def reconcile(facts: Facts, tol: Tolerances | None = None) -> Report:
    tol = tol or Tolerances()
    found: list[Finding] = []
    for batch in facts.batches:
        found += batch_findings(batch, [*facts.sessions, *facts.batch_sessions])
    for s in facts.sessions:
        found += _session(s, facts, tol)
    paid = {s.reference for s in facts.sessions if s.captured_minor and s.reference}
    for reference, sid in facts.cdrs:
        if reference not in paid:
            said = f"a CDR for {reference}, which has no captured payment"
            found.append(
                Finding(f"cdr_unpaid:{reference}", "cdr_unpaid", said, (sid,) if sid else ())
            )
    for m in facts.missing_webhooks:
        said = (
            f"the acquirer took the {m.kind} {m.key} but no webhook came by "
            f"{m.deadline:%Y-%m-%d %H:%M} UTC: its outcome is unknown (never counted as done)"
        )
        found.append(
            Finding(
                f"missing_webhook:{m.key}",
                "missing_webhook",
                said,
                (m.session,) if m.session else (),
                m.amount_minor,
                m.currency,
            )
        )
    for w in facts.unclaimed_webhooks:
        said = (
            f"the acquirer reported a {w.event} {w.psp_reference} on payment {w.payment} that "
            "no modification of ours claims (made elsewhere, or for another amount)"
        )
        found.append(
            Finding(
                f"unclaimed_webhook:{w.psp_reference}:{w.event}",
                "unclaimed_webhook",
                said,
                (),
                w.amount_minor,
                w.currency,
            )
        )
    resolved = [replace(f, resolved=_resolution(f, facts.resolutions)) for f in found]
    return Report(facts.start, facts.end, len(facts.sessions), len(facts.batches), tuple(resolved))


def _resolution(f: Finding, resolutions: Mapping[str, str]) -> str | None:
    """The technician's reason for a finding; a batch finding resolved before its key named the
    currency (a batch then had one) is found by that older key."""
    found = resolutions.get(f.key)
    if found is None and f.kind in BATCH_KINDS and f.key.endswith(f":{f.currency}"):
        found = resolutions.get(f.key.removesuffix(f":{f.currency}"))
    return found


def _session(s: SessionFacts, facts: Facts, tol: Tolerances) -> list[Finding]:
    out = []
    one = (s.id,)
    if s.state == "capture_unconfirmed":
        out.append(
            Finding(
                f"capture_unconfirmed:{s.id}",
                "capture_unconfirmed",
                f"no evidence of the capture: {s.owed_minor} owed and its outcome held back "
                f"from the CPO until the end-of-day totals or the terminal's journal decide",
                one,
                s.owed_minor,
                s.currency,
            )
        )
    elif s.owed_minor and facts.now - s.updated_at > tol.owed_within:
        out.append(
            Finding(
                f"owed_overdue:{s.id}",
                "owed_overdue",
                f"{s.owed_minor} owed ({s.state}) for more than {tol.owed_within}",
                one,
                s.owed_minor,
                s.currency,
            )
        )
    if s.shortfall_minor:
        out.append(
            Finding(
                f"shortfall:{s.id}",
                "shortfall",
                f"priced {s.price_minor}, held and captured "
                f"{s.captured_minor}: {s.shortfall_minor} above the hold",
                one,
                s.shortfall_minor,
                s.currency,
            )
        )
    if (
        s.reported_energy_wh is not None
        and abs(s.reported_energy_wh - s.billed_energy_wh) > tol.energy_wh
    ):
        out.append(
            Finding(
                f"energy_mismatch:{s.id}",
                "energy_mismatch",
                f"billed {s.billed_energy_wh} Wh, the charger reported {s.reported_energy_wh} Wh",
                one,
                0,
                s.currency,
            )
        )
    if s.refunds_unsettled:
        out.append(
            Finding(
                f"refund_unsettled:{s.id}",
                "refund_unsettled",
                f"{s.refunds_unsettled} refund(s) sent "
                "without the terminal's answer: check its journal",
                one,
                0,
                s.currency,
            )
        )
    owed_back = (
        ("refund_due", s.refund_due_minor, "captured above the corrected price, not given back"),
        ("refund_other_card", s.paid_elsewhere_minor, "refunded to another card than its own"),
    )
    for kind, minor, said in owed_back:  # money the driver is owed back
        if minor:
            out.append(Finding(f"{kind}:{s.id}", kind, f"{minor} {said}", one, minor, s.currency))
    waiting = facts.unacknowledged.get(s.id)
    if waiting is not None:
        status, since = waiting
        if status == "dead" or facts.now - since > tol.acknowledged_within:
            out.append(
                Finding(
                    f"not_acknowledged:{s.id}",
                    "not_acknowledged",
                    f"the outcome is {status} upstream "
                    f"since {since:%Y-%m-%d %H:%M}: the CPO has not taken it",
                    one,
                    s.captured_minor,
                    s.currency,
                )
            )
    return out
