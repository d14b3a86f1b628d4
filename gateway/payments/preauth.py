"""Pre-authorisation strategies: pure functions from policy, tariff and the driver's wish to a
hold amount in minor units. Every strategy is clamped to [hold_min, hold_max].

- ``fixed``: one amount per currency. Simple and predictable; a high hold raises declines
  and blocks the driver's funds, a low one caps long sessions.
- ``target``: the driver declares kWh or an amount; the hold is the tariff price of that
  target (at the EVSE's assumed power) plus a margin. Fewer declines, holds match intent;
  needs the tariff locally and input from the driver.
- ``incremental``: start small and top up as the running cost nears the hold. Short sessions
  hold little (good for cash flow and decline rate); top-up support varies by terminal and
  acquirer, and a refused top-up stops the charge at the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from drivers.money import currency as currency_info
from gateway.payments.tariff import Tariff, price, session_samples


def currency_exponent(code: str) -> int:
    return currency_info(code).exponent


Strategy = Literal["fixed", "target", "incremental"]


@dataclass(frozen=True, slots=True)
class HoldPolicy:
    strategy: Strategy
    fixed_minor: dict[str, int]  # per currency
    min_minor: int
    max_minor: int
    target_margin_pct: Decimal = Decimal(10)
    assumed_power_kw: Decimal = Decimal(11)
    incremental_initial_minor: int = 2000
    incremental_step_minor: int = 2000
    topup_threshold_pct: Decimal = Decimal(80)


@dataclass(frozen=True, slots=True)
class Target:
    """What the driver declared: an energy (kWh) or an amount (minor units)."""

    kwh: Decimal | None = None
    amount_minor: int | None = None


def clamp(policy: HoldPolicy, minor: int) -> int:
    return max(policy.min_minor, min(policy.max_minor, minor))


def initial_hold(
    policy: HoldPolicy,
    currency: str,
    tariff: Tariff | None,
    target: Target | None,
    now: datetime,
    tz: ZoneInfo,
) -> int:
    if policy.strategy == "incremental":
        return clamp(policy, policy.incremental_initial_minor)
    if policy.strategy == "target" and target is not None:
        if target.amount_minor is not None:
            base = target.amount_minor
        elif target.kwh is not None and tariff is not None:
            hours = target.kwh / policy.assumed_power_kw
            duration = timedelta(seconds=int((hours * 3600).to_integral_value(ROUND_CEILING)))
            wh = int((target.kwh * 1000).to_integral_value(ROUND_CEILING))
            base = price(tariff, session_samples(now, wh, duration), tz).minor
        else:
            base = policy.fixed_minor.get(currency, policy.max_minor)
        with_margin = (Decimal(base) * (100 + policy.target_margin_pct) / 100).to_integral_value(
            ROUND_CEILING
        )
        return clamp(policy, int(with_margin))
    if (
        tariff is not None
        and tariff.preauthorize_amount is not None
        and tariff.currency == currency
    ):
        # OCPI payments edition: the tariff says what to hold (read as the gross amount).
        exponent = Decimal(10) ** -currency_exponent(currency)
        held = (tariff.preauthorize_amount / exponent).to_integral_value(ROUND_CEILING)
        return clamp(policy, int(held))
    return clamp(policy, policy.fixed_minor.get(currency, policy.max_minor))


def topup(policy: HoldPolicy, authorized_minor: int, running_minor: int) -> int | None:
    """How much to add to the hold now, or None. Only the incremental strategy tops up,
    and never beyond hold_max."""
    if policy.strategy != "incremental":
        return None
    if running_minor * 100 < authorized_minor * policy.topup_threshold_pct:
        return None
    room = policy.max_minor - authorized_minor
    return min(policy.incremental_step_minor, room) if room > 0 else None
