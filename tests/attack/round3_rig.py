"""The sessions and builders the round-3 money attacks share (tests/attack/test_attack_round3_*):
a session capturing, completed or unconfirmed at the fixtures' tariff, two holds, a partial
capture, corrections and evidence, what reconciliation leaves unexplained of one session, and
an engine host on a real store with a charge and an end of day on it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from drivers.base import BrandTotal, Outcome, TerminalResult
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.reconcile import BatchFacts, Facts, Finding, reconcile, session_facts
from gateway.payments.record import to_json
from gateway.payments.session import Policy, Session, State, Transition
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import DAY_TARIFF, T0, Clock, at, policy, wall_clock
from tests.payments.fixtures import terminal_result as res

SID = "s1"
MC = {"brand": "MasterCard", "aid": "A0000000041010", "masked_pan": "541333******0074"}
VISA = {"brand": "VISA", "aid": "A0000000031010", "masked_pan": "400000******0002"}
P = policy()
P_TOPUP = policy("incremental", topup_terminals=frozenset({"T1"}))


def unexplained(
    s: Session, minutes: float, judged: timedelta, batches: tuple[BatchFacts, ...] = ()
) -> tuple[Finding, ...]:
    """What reconciliation leaves unexplained of ``s`` alone, its row last written ``minutes``
    after T0, over the day from T0, judged ``judged`` after T0 (with ``batches``)."""
    row = {
        "id": s.id,
        "state": s.state.value,
        "data": to_json(s),
        "created_at": s.created_at,
        "updated_at": T0 + timedelta(minutes=minutes),
    }
    facts = Facts(T0, T0 + timedelta(days=1), T0 + judged, [session_facts(row)], batches)
    return reconcile(facts).unexplained


def enqueued(t: Transition, kind: str = "session.outcome") -> list[c.Enqueue]:
    return [x for x in t.commands if isinstance(x, c.Enqueue) and x.kind == kind]


def refunds_sent(t: Transition) -> list[c.RefundPayment]:
    return [x for x in t.commands if isinstance(x, c.RefundPayment)]


def capturing(
    pol: Policy = P, card: dict[str, str] | None = None, stop_wh: int = 11_000
) -> Session:
    """10 kWh at the fixtures' tariff: 6.55 EUR to capture from a hold of 50.00 (receipt 7)."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, pol)
    s = at(s, res("preauthorize", Outcome.APPROVED, 5000, 7, card=card or MC), 0, pol)
    s = at(s, e.ChargerStarted(SID, "st", 1000), 1, pol)
    s = at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=stop_wh), 60, pol)
    assert s.state is State.CAPTURING
    return s


def completed(pol: Policy = P, card: dict[str, str] | None = None) -> Session:
    s = at(capturing(pol, card), res("capture", Outcome.APPROVED, 655, 8, for_ref="7"), 61, pol)
    assert s.state is State.COMPLETED and s.captured_minor == 655
    return s


def unconfirmed(pol: Policy = P) -> Session:
    """The capture's answer lost, the hold gone, no evidence: capture_unconfirmed, 6.55 owed."""
    s = at(capturing(pol), res("capture", Outcome.UNKNOWN, None, None, for_ref="7"), 61, pol)
    s = at(s, e.OpenPreauthsReported(SID, "q", ()), 62, pol)
    assert s.state is State.CAPTURE_UNCONFIRMED and s.bill.owed_minor == 655
    return s


def evidence(captured: bool, n: int = 1) -> e.CaptureEvidence:
    return e.CaptureEvidence(
        session_id=SID, event_id=f"eod-{n}", captured=captured, evidence="end-of-day totals"
    )


def correction(total: int, n: int = 2, currency: str | None = None) -> e.PriceCorrected:
    return e.PriceCorrected(
        session_id=SID,
        event_id=f"price-corrected-CDR-{n}",
        total_minor=total,
        reason=f"corrected CDR {n}",
        currency=currency,
    )


def two_holds(stop_wh: int) -> Session:
    """An incremental session: hold 7 (15.00), a top-up as a new hold 8 (15.00), stopped."""
    s = at(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, P_TOPUP)
    s = at(s, res("preauthorize", Outcome.APPROVED, 1500, 7, card=MC), 0, P_TOPUP)
    s = at(s, e.ChargerStarted(SID, "st", 0), 1, P_TOPUP)
    s = at(s, e.MeterValue(SID, "m", 21_000), 30, P_TOPUP)
    s = at(s, res("topup", Outcome.APPROVED, 1500, 8, for_ref="7"), 31, P_TOPUP)
    assert [h.ref for h in s.holds] == ["7", "8"]
    return at(s, e.ChargerStopped(session_id=SID, event_id="sp", meter_wh=stop_wh), 60, P_TOPUP)


def partly_captured() -> Session:
    """17.26 priced: hold 7 captured (15.00), hold 8's capture (2.26) declined until it lapsed."""
    s = two_holds(30_000)
    s = at(s, res("capture", Outcome.APPROVED, 1500, 30, for_ref="7"), 61, P_TOPUP)
    s = at(s, res("capture", Outcome.DECLINED, None, None, for_ref="8"), 62, P_TOPUP)
    s = replace(s, expires_at=T0 + timedelta(minutes=90))
    s = at(s, e.OpenPreauthsReported(SID, "q", ("8",)), 63, P_TOPUP)
    assert s.state is State.CAPTURE_FAILED and (s.captured_minor, s.bill.owed_minor) == (1500, 226)
    return s


# ---- the host and the store: end-of-day evidence --------------------------------------------


def make_host(tmp_path: Path, pol: Policy = P) -> tuple[EngineHost, Clock, Store]:
    """A host on a real store, on the wall clock: ``pol`` priced with the day tariff, so the
    hour a run starts at cannot change an amount."""
    clock = wall_clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    return EngineHost(store, replace(pol, tariffs={"*": DAY_TARIFF}), clock), clock, store


def charge_at_host(
    host: EngineHost, clock: Clock, sid: str, receipt: int, capture: Outcome
) -> Session:
    """2 kWh (2.26 EUR) on a Mastercard at T1; the capture answered with ``capture``."""
    for ev in (
        e.CardPresented(sid, "card", "E1", "T1", "EUR"),
        res("preauthorize", Outcome.APPROVED, 5000, receipt, sid=sid, card=MC),
        e.ChargerStarted(sid, "st", 1000),
        e.ChargerStopped(session_id=sid, event_id="sp", meter_wh=3000),
        res(
            "capture",
            capture,
            None if capture is Outcome.UNKNOWN else 226,
            receipt + 1,
            sid=sid,
            for_ref=str(receipt),
        ),
    ):
        host.handle(ev)
        clock.advance(60)
    if capture is Outcome.UNKNOWN:
        host.handle(e.OpenPreauthsReported(sid, "q", ()))
        clock.advance(60)
    s = host.load(sid)
    assert s is not None
    return s


def close_day(host: EngineHost, count: int, amount: int, currency: str = "EUR") -> None:
    batch = TerminalResult(
        "end_of_day",
        Outcome.APPROVED,
        totals=(BrandTotal("mastercard", count, amount, currency),),
        batch_range=("1", "99"),
    )
    host.record_end_of_day("T1", batch, currency)
