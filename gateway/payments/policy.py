"""The site's rules for every session: holds, tariffs, timeouts, margins, receipts. Built once
from the configuration (``gateway/runtime/engine_setup.py``); the engine only reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from drivers.base import Capabilities
from gateway.fiscal.profiles import PROFILES, Profile
from gateway.payments.preauth import HoldPolicy
from gateway.payments.schemes import Validity
from gateway.payments.tariff import Pricer, Tariff

if TYPE_CHECKING:
    from gateway.payments.model import Session


@dataclass(frozen=True, slots=True)
class Policy:
    hold: HoldPolicy
    tariffs: dict[str, Tariff]  # by EVSE id; "*" is the site default
    tz: ZoneInfo
    catalog: dict[str, Tariff] = field(default_factory=dict)  # every tariff ever in force, by id
    start_timeout: timedelta = timedelta(minutes=3)
    stop_timeout: timedelta = timedelta(seconds=60)
    # ZVT T4 (3 min) with room for intermediate statuses
    answer_timeout: timedelta = timedelta(minutes=6)
    resolve_auth_within: timedelta = timedelta(hours=1)  # a lost pre-auth is asked about this long
    validity: Validity = field(default_factory=Validity)
    stop_before_expiry: timedelta = timedelta(hours=24)
    give_up_before_expiry: timedelta = timedelta(hours=1)
    retry_initial: timedelta = timedelta(seconds=30)
    retry_max: timedelta = timedelta(minutes=30)
    safety_margin_minor: int = 50
    min_partial_minor: int = 500
    energy_tolerance_wh: int = 10
    bill_without_energy: bool = False  # zero trusted energy: release the whole hold
    topup_terminals: frozenset[str] = frozenset()  # terminals that can add a hold to a card session
    # what each terminal can do, as configured (``capabilities_of``; strategy_choice.py)
    capabilities: dict[str, Capabilities] = field(default_factory=dict)
    fiscal: Profile = field(default_factory=lambda: PROFILES["none"])  # the site's receipt profile
    fiscal_wait: timedelta = timedelta(seconds=20)  # how long a receipt waits for the signature
    e_receipt_url: str | None = None  # where the complete receipt will be, "{reference}" filled in
    # terminals without a printer: the receipt is displayed
    display_only: frozenset[str] = frozenset()
    # a route's (acquirer profile's) hold policy
    route_holds: dict[str, HoldPolicy] = field(default_factory=dict)
    route_tariffs: dict[str, Tariff] = field(default_factory=dict)  # a route's own tariff
    # a route's (safety margin, minimum partial approval), in its own currency's minor units:
    # the site's 50 (0.50 EUR) is not 50 yen; a route in another currency states its own
    route_margins: dict[str, tuple[int, int]] = field(default_factory=dict)
    pricer: Pricer = field(default_factory=Pricer, compare=False, repr=False)  # incrementally
    rated_power_w: dict[str, int] = field(default_factory=dict)  # by EVSE (plausibility.py)
    # by EVSE: a charge with no reading for this long: the charger is asked for its state, then
    # stopped and billed to its last trusted reading (``moves.charging_timer``,
    # ``charging.ask_state``); unset: only the hold's validity bounds it
    meter_silence: dict[str, timedelta] = field(default_factory=dict)
    # how long a charger asked for its state after a meter silence has to answer (a reading, its
    # stop or a fault) before the charge is stopped and billed on what was last heard
    state_wait: timedelta = timedelta(seconds=60)
    # by EVSE: energy given away at most, where free vend is explicit (an EVSE without a tariff
    # and without an entry here gets no hold: the engine cannot price it)
    free_vend_wh: dict[str, int] = field(default_factory=dict)
    # terminals whose modifications go to an acquirer's online API (``modifications = "NAME"``):
    # a capture, release or top-up waits this long for the acquirer's webhook (its evidence),
    # not the terminal's answer timeout; refunds go to the acquirer too
    online_deadlines: dict[str, timedelta] = field(default_factory=dict)
    # terminals that may not refund by card presence (06 31) once the batch is closed
    no_card_present_refunds: frozenset[str] = frozenset()

    def answer_timeout_of(self, terminal: str) -> timedelta:
        """How long a modification command of ``terminal`` waits for its outcome."""
        return self.online_deadlines.get(terminal, self.answer_timeout)

    def tariff(self, evse: str) -> Tariff | None:
        return self.tariffs.get(evse) or self.tariffs.get("*")

    def free_vend_cap(self, session: Session) -> int | None:
        """The free vend cap (Wh) of a session with no tariff, or None: it is priced."""
        if self.pinned(session) is not None:
            return None
        return self.free_vend_wh.get(session.evse)

    def capabilities_of(self, terminal: str) -> Capabilities:
        """What ``terminal`` can do; a policy built without capabilities (tests, bench) knows
        only which terminals top up."""
        found = self.capabilities.get(terminal)
        if found is not None:
            return found
        return Capabilities(incremental=terminal in self.topup_terminals)

    def hold_of(self, route: str | None) -> HoldPolicy:
        """The hold policy of a route (its acquirer profile), else the site's."""
        return (self.route_holds.get(route) if route else None) or self.hold

    def safety_margin(self, route: str | None) -> int:
        """How far below the hold (or the declared amount) charging stops, in the session's
        minor units: its route's own, else the site's."""
        own = self.route_margins.get(route) if route else None
        return own[0] if own is not None else self.safety_margin_minor

    def min_partial(self, route: str | None) -> int:
        """The least partial approval worth charging on, in the session's minor units."""
        own = self.route_margins.get(route) if route else None
        return own[1] if own is not None else self.min_partial_minor

    def pinned(self, session: Session) -> Tariff | None:
        """The tariff a session started with (a tariff change mid-session never reprices it)."""
        if session.tariff_id is not None:
            found = self.catalog.get(session.tariff_id) or next(
                (t for t in self.route_tariffs.values() if t.id == session.tariff_id), None
            )
            if found is not None:
                return found
            current = self.tariff(session.evse)
            if current is not None and current.id == session.tariff_id:
                return current
        return self.tariff(session.evse)
