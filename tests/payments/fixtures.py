"""Shared engine fixtures: a tariff, policies per strategy, a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from drivers.base import Outcome
from gateway.payments import events as e
from gateway.payments.preauth import HoldPolicy, Strategy
from gateway.payments.session import Policy, Session, Transition, transition
from gateway.payments.tariff import Dimension, PriceComponent, Restrictions, Tariff, TariffElement

TZ = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

# 0.45 EUR/kWh + 19 % VAT, 1.00 EUR start fee, parking 6.00 EUR/h after 4 h; night energy 0.35.
TARIFF = Tariff(
    "T1",
    "EUR",
    (
        TariffElement((PriceComponent(Dimension.FLAT, Decimal("1.00"), Decimal(19)),)),
        TariffElement(
            (PriceComponent(Dimension.ENERGY, Decimal("0.35"), Decimal(19), 1),),
            Restrictions(start_time=time(22), end_time=time(6)),
        ),
        TariffElement((PriceComponent(Dimension.ENERGY, Decimal("0.45"), Decimal(19), 1),)),
        TariffElement(
            (PriceComponent(Dimension.PARKING_TIME, Decimal("6.00"), Decimal(19), 60),),
            Restrictions(min_duration=4 * 3600),
        ),
    ),
)


# For tests on the wall clock (a real store's windows, ``evpay reconcile``'s default day): the
# fixtures' tariff without its 22:00-06:00 night rate, so a run at any hour prices alike.
DAY_TARIFF = replace(TARIFF, elements=(TARIFF.elements[0], *TARIFF.elements[2:]))


def wall_clock(hours_ago: float = 3) -> Clock:
    """A fake clock started ``hours_ago`` before the real now (stores and CLI windows use real
    time); price with ``DAY_TARIFF`` so the hour of the run cannot change an amount."""
    return Clock(datetime.now(UTC) - timedelta(hours=hours_ago))


def policy(strategy: Strategy = "fixed", **overrides: Any) -> Policy:
    hold = HoldPolicy(
        strategy=strategy,
        fixed_minor={"EUR": 5000},
        min_minor=500,
        max_minor=15000,
        incremental_initial_minor=1500,
        incremental_step_minor=1500,
    )
    base: dict[str, Any] = {
        "hold": hold,
        "tariffs": {"*": TARIFF},
        "tz": TZ,
        "start_timeout": timedelta(minutes=3),
    }
    base.update(overrides)
    return Policy(**base)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def terminal_result(
    op: str,
    outcome: Outcome,
    amount: int | None,
    receipt: int | None,
    *,
    sid: str = "s1",
    **kw: Any,
) -> e.TerminalResultArrived:
    """A terminal's answer to session ``sid`` (the engine tests' one session ``s1`` unless
    named), its receipt as the driver's text ref; ``kw`` are the event's other fields (card,
    for_ref, provisional, ...). A provisional answer has an event id of its own."""
    provisional = "-provisional" if kw.get("provisional") else ""
    return e.TerminalResultArrived(
        session_id=sid,
        event_id=f"{op}-{outcome}-{amount}-{receipt}-{kw.get('for_ref')}{provisional}",
        operation=e.Operation(op),
        outcome=outcome,
        amount_minor=amount,
        ref=None if receipt is None else str(receipt),
        **kw,
    )


FIXED = policy()


def step(s: Session | None, ev: e.Event, minutes: float = 0, pol: Policy = FIXED) -> Transition:
    """The engine's one way in, ``minutes`` after T0, under ``pol`` (the fixed-hold policy)."""
    return transition(s, ev, T0 + timedelta(minutes=minutes), pol)


def at(s: Session | None, ev: e.Event, minutes: float = 0, pol: Policy = FIXED) -> Session:
    """The session after :func:`step` (which must leave one)."""
    t = step(s, ev, minutes, pol)
    assert t.session is not None
    return t.session


def card_and_preauth(
    handle: Callable[[e.Event], object],
    sid: str,
    ref: str | None = None,
    *,
    outcome: Outcome = Outcome.APPROVED,
    amount_minor: int | None = 5000,
    event_id: str = "auth",
) -> None:
    """A card presented at E1 (terminal T1, EUR) and the terminal's answer to its
    pre-authorisation, handed to ``handle`` (a host's): how the host-level tests start."""
    handle(e.CardPresented(sid, "card", "E1", "T1", "EUR"))
    approved = outcome is Outcome.APPROVED
    handle(
        e.TerminalResultArrived(
            session_id=sid,
            event_id=event_id,
            operation=e.Operation.PREAUTHORIZE,
            outcome=outcome,
            amount_minor=amount_minor if approved else None,
            ref=ref if approved else None,
        )
    )
