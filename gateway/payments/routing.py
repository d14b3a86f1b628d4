"""Routing a payment: which terminal (and so which acquirer contract), currency and hold policy.

Pure. Routes are tried in the configured order; the first whose conditions all match the
payment is used. Its terminals are in order of preference, and the first *healthy* one is
used: a terminal is taken out after ``failover_after`` consecutive technical failures (no
answer, a terminal or acquirer error — never a declined card) and comes back when a probe (a
status enquiry) or any operation succeeds. Conditions: the EVSE, the site's country, the
currency, and — when the card was read before the pre-authorisation (card-first starts) — the
card's brand group and its BIN (first six digits of the masked PAN). A route that names brands
or BINs never matches a payment whose card is not known yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.payments.preauth import HoldPolicy
from gateway.payments.schemes import brand_group


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    terminals: tuple[str, ...]
    currency: str  # what the route's terminals charge in
    evses: frozenset[str] = frozenset()  # empty: every EVSE
    countries: frozenset[str] = frozenset()
    brands: frozenset[str] = frozenset()  # card groups (gateway.payments.schemes.BRANDS)
    bins: tuple[tuple[int, int], ...] = ()  # inclusive ranges of 6-digit BINs
    hold: HoldPolicy | None = None  # the acquirer profile's hold policy; None: the site's

    def matches(self, evse: str, country: str, card: CardSeen | None) -> bool:
        if self.evses and evse not in self.evses:
            return False
        if self.countries and country not in self.countries:
            return False
        if self.brands or self.bins:
            if card is None:
                return False
            if self.brands and brand_group({"brand": card.brand or ""}) not in self.brands:
                return False
            if self.bins and (
                card.bin is None or not any(lo <= card.bin <= hi for lo, hi in self.bins)
            ):
                return False
        return True


@dataclass(frozen=True, slots=True)
class CardSeen:
    """What a read card (before any payment) tells the router."""

    brand: str | None
    bin: int | None  # first six digits of the PAN

    @classmethod
    def from_masked(cls, brand: str | None, masked_pan: str | None) -> CardSeen:
        digits = (masked_pan or "")[:6]
        return cls(brand, int(digits) if digits.isdigit() and len(digits) == 6 else None)


@dataclass(frozen=True, slots=True)
class Choice:
    route: str
    terminal: str
    currency: str
    hold: HoldPolicy | None


@dataclass(slots=True)
class Health:
    """Consecutive technical failures per terminal; at ``failover_after`` it is out until it
    answers again."""

    failover_after: int = 3
    failures: dict[str, int] = field(default_factory=dict)

    def failed(self, terminal: str) -> None:
        self.failures[terminal] = self.failures.get(terminal, 0) + 1

    def succeeded(self, terminal: str) -> None:
        self.failures.pop(terminal, None)

    def up(self, terminal: str) -> bool:
        return self.failures.get(terminal, 0) < self.failover_after

    def down(self) -> list[str]:
        return sorted(t for t, n in self.failures.items() if n >= self.failover_after)


def choose(
    routes: Sequence[Route],
    evse: str,
    country: str,
    health: Health,
    card: CardSeen | None = None,
    at_terminal: str | None = None,
) -> Choice | str:
    """The route and terminal for a payment, or why there is none. ``at_terminal``: the card
    is already at this terminal (card-first), so only routes through it can take it."""
    matching = [r for r in routes if r.matches(evse, country, card)]
    if at_terminal is not None:
        matching = [r for r in matching if at_terminal in r.terminals]
        if not matching:
            return f"no route takes this card at terminal {at_terminal}"
        if not health.up(at_terminal):
            return f"terminal {at_terminal} is out after repeated technical failures"
        return Choice(matching[0].id, at_terminal, matching[0].currency, matching[0].hold)
    if not matching:
        return f"no route for EVSE {evse}"
    for route in matching:
        for terminal in route.terminals:
            if health.up(terminal):
                return Choice(route.id, terminal, route.currency, route.hold)
    return f"every terminal of route {matching[0].id} is out after repeated technical failures"
