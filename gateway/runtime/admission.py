"""Admission and routing: whether a pay request may start a session, and on which terminal.

Refusals are answers, not exceptions: an unknown EVSE (404), an EVSE with an open session (409),
no route or no terminal available, or an engine whose queue is full (503, with the reason).
The same idempotency key gives the same session. Card-first starts land here too: a card tapped
at a terminal starts a session at its one free EVSE, or waits up to ``CARD_ARMED_S`` for the
driver to choose one by plugging in.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.errors import InvariantViolated
from gateway.payments import events as e
from gateway.payments.preauth import Target
from gateway.payments.routing import CardSeen, Health, Route, choose
from gateway.payments.states import EVSE_FREE
from gateway.runtime.engine_host import EngineHost

_LOGGER = logging.getLogger(__name__)
CARD_ARMED_S = 60.0  # a tapped card waits this long for the driver's EVSE (a plug-in)


@dataclass(frozen=True, slots=True)
class PayAnswer:
    """What a pay request gets: 202 with the stored session, or the refusal and why."""

    status: int
    message: str
    session_id: str | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class EvseRoute:
    """An EVSE's own terminal and the currency it charges in (used when no routes are set)."""

    terminal: str
    currency: str


@dataclass(frozen=True, slots=True)
class Admitted:
    """A pay request that may start: the session's first event, and the route chosen."""

    event: e.CardPresented
    route: str | None  # the configured route's id, when routes chose the terminal


@dataclass(slots=True, kw_only=True)
class Admission:
    host: EngineHost
    routes: Mapping[str, EvseRoute]  # evse -> terminal and currency
    board: Mapping[str, tuple[bool, str]]  # terminal -> (available, why), kept by the runners
    router: tuple[Route, ...] = ()  # configured routes; none: each EVSE's own terminal
    country: str = ""
    health: Health = field(default_factory=Health)
    currencies: Mapping[str, str] = field(default_factory=dict)  # terminal -> its configured one
    _armed: dict[str, float] = field(default_factory=dict)  # terminal -> until when a card waits

    def admit(
        self,
        evse: str,
        idempotency_key: str | None = None,
        target: Target | None = None,
        card: CardSeen | None = None,
        at_terminal: str | None = None,
    ) -> PayAnswer | Admitted:
        """The refusal (or the known session, for a repeated key), else the session to start.
        With routes, the route picks the terminal (``card``: read before the pre-auth, at
        ``at_terminal``)."""
        route = self.routes.get(evse)
        if route is None:
            return PayAnswer(404, f"unknown EVSE {evse!r}")
        sid = uuid.uuid4().hex
        if idempotency_key:
            sid = hashlib.sha256(f"{evse}\x00{idempotency_key}".encode()).hexdigest()[:32]
            known = self.host.load(sid)
            if known is not None:
                return PayAnswer(202, "payment requested", sid, known.state.value)
        busy = next(
            (s for s in self.host.open_sessions() if s.evse == evse and s.state not in EVSE_FREE),
            None,
        )
        if busy is not None:
            return PayAnswer(
                409, f"EVSE {evse} already has an open session", busy.id, busy.state.value
            )
        chosen: str | None = None
        if self.router:
            choice = choose(self.router, evse, self.country, self.health, card, at_terminal)
            if isinstance(choice, str):
                return PayAnswer(503, f"no acquirer can take this payment: {choice}")
            route, chosen = EvseRoute(choice.terminal, choice.currency), choice.route
        up, why = self.board.get(route.terminal, (False, "not registered yet"))
        if not up:
            return PayAnswer(503, f"terminal {route.terminal} unavailable: {why}")
        presented = e.CardPresented(
            session_id=sid,
            event_id="card",
            evse=evse,
            terminal=route.terminal,
            currency=route.currency,
            target=target,
            route=chosen,
        )
        return Admitted(presented, chosen)

    def currency(self, evse: str) -> str | None:
        """What a payment at ``evse`` is made in (a driver's declared amount is read in it):
        the currency of the route it is routed to, else of its own terminal."""
        route = self.routes.get(evse)
        if route is None:
            return None
        if self.router:
            choice = choose(self.router, evse, self.country, self.health)
            if not isinstance(choice, str):
                return choice.currency
        return route.currency

    def currency_of_terminal(self, terminal: str) -> str:
        """What ``terminal`` charges in: an EVSE's own terminal, or one reached only through
        ``[[routes]]`` (its sweeps and end-of-day batches are in its currency, not the site's),
        or one nothing names (a spare, or one whose EVSEs moved while it holds pre-auths): its
        configured currency. Never a guess: a terminal with none is a bug."""
        own = (r.currency for r in self.routes.values() if r.terminal == terminal)
        routed = (r.currency for r in self.router if terminal in r.terminals)
        found = self.currencies.get(terminal) or next(own, None) or next(routed, None)
        if found is None:
            raise InvariantViolated(f"terminal {terminal} has no currency (config, EVSE, route)")
        return found

    # ---- card first ---------------------------------------------------------------------------

    def card_read(self, terminal: str, card: CardSeen, pay: Callable[..., PayAnswer]) -> None:
        """A card tapped at ``terminal``: start at its one free EVSE (``pay``), or wait for the
        driver to choose among several by plugging in within CARD_ARMED_S."""
        evses = [evse for evse, route in self.routes.items() if route.terminal == terminal]
        busy = {s.evse for s in self.host.open_sessions() if s.state not in EVSE_FREE}
        free = [evse for evse in evses if evse not in busy]
        if len(free) == 1:
            answer = pay(
                free[0],
                f"card:{uuid.uuid4().hex}",
                card=card,
                at_terminal=terminal if self.router else None,
            )
            _LOGGER.info(
                "engine.card_start",
                extra={"terminal": terminal, "evse": free[0], "status": answer.status},
            )
        elif free:
            self._armed[terminal] = asyncio.get_running_loop().time() + CARD_ARMED_S
            _LOGGER.info("engine.card_armed", extra={"terminal": terminal, "evses": ",".join(free)})

    @property
    def armed(self) -> bool:
        """Is a tapped card waiting for its EVSE?"""
        return bool(self._armed)

    def arm_taken(self, evse: str) -> bool:
        """A plug-in (or an EVSE chosen on the charger) after a card tap at its terminal."""
        route = self.routes.get(evse)
        until = self._armed.pop(route.terminal, 0.0) if route else 0.0
        return until > asyncio.get_running_loop().time()
