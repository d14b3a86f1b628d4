"""The whole configuration file and what must hold across its sections: every reference names
something configured, every EVSE can be priced in its terminal's currency, every route is
consistent and every terminal can carry out the strategy it would be paid with."""

from __future__ import annotations

from pydantic import model_validator

from drivers.errors import AmountError
from drivers.money import Money
from gateway.settings.acquirers import AcquirerSettings
from gateway.settings.chargers import ChargerSettings, EvseSettings
from gateway.settings.fields import Identifier, _Model
from gateway.settings.pricing import PricingSettings
from gateway.settings.routes import RouteSettings, RoutingSettings
from gateway.settings.site import (
    ApiSettings,
    DaemonSettings,
    FiscalSettings,
    JournalSettings,
    LoggingSettings,
    SiteSettings,
    StorageSettings,
)
from gateway.settings.terminals import TerminalSettings
from gateway.settings.upstream import UpstreamSettings


class Settings(_Model):
    site: SiteSettings
    storage: StorageSettings = StorageSettings()
    api: ApiSettings = ApiSettings()
    logging: LoggingSettings = LoggingSettings()
    daemon: DaemonSettings = DaemonSettings()
    terminals: list[TerminalSettings] = []
    charger: ChargerSettings = ChargerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    pricing: PricingSettings = PricingSettings()
    journal: JournalSettings = JournalSettings()
    fiscal: FiscalSettings = FiscalSettings()
    routes: list[RouteSettings] = []
    routing: RoutingSettings = RoutingSettings()
    acquirers: dict[Identifier, AcquirerSettings] = {}

    @model_validator(mode="after")
    def _references(self) -> Settings:
        ids = [t.id for t in self.terminals]
        if len(ids) != len(set(ids)):
            raise ValueError("terminal ids must be unique")
        if self.charger.enabled and self.charger.mode == "ocpi":
            if not self.upstream.enabled:
                raise ValueError(
                    'charger mode "ocpi" needs an enabled [upstream] (the CPO runs the charger)'
                )
            missing = [e.id for e in self.charger.evses if not e.location]
            if missing:
                raise ValueError(
                    f'charger mode "ocpi" needs a location for every EVSE; missing for {missing}'
                )
        if self.fiscal.profile not in ("none", self.site.country):
            raise ValueError(
                f"fiscal profile {self.fiscal.profile} does not fit the site's country "
                f"{self.site.country}"
            )
        tariff_ids = {str(t.get("id")) for t in self.pricing.tariffs}
        for evse in self.charger.evses:
            if evse.terminal not in ids:
                raise ValueError(
                    f"evse {evse.id!r} names terminal {evse.terminal!r}, which is not configured"
                )
            if evse.tariff is not None and evse.tariff not in tariff_ids:
                raise ValueError(
                    f"evse {evse.id!r} names tariff {evse.tariff!r}, which is not configured"
                )
            self._check_evse_priced(evse)
        if self.acquirers and not (self.upstream.enabled and self.upstream.listen):
            raise ValueError(
                "[acquirers] need their webhooks: they are received on the OCPI server, so set "
                "[upstream] enabled and listen"
            )
        for terminal in self.terminals:
            if (
                terminal.modifications != "terminal"
                and terminal.modifications not in self.acquirers
            ):
                raise ValueError(
                    f"terminal {terminal.id!r}: modifications = {terminal.modifications!r} names "
                    f'no [acquirers.{terminal.modifications}] section (or use "terminal")'
                )
        self._check_routes()
        self._check_capabilities()
        return self

    def _check_capabilities(self) -> None:
        """Every terminal a payment can reach can carry out the strategy it would be paid
        with: its capabilities are data, so a policy it cannot do is refused here."""
        terminals = {t.id: t for t in self.terminals}
        uses = [(f"evse {e.id!r}", e.terminal, self.pricing.strategy) for e in self.charger.evses]
        uses += [
            (f"route {r.id!r}", t, r.strategy or self.pricing.strategy)
            for r in self.routes
            for t in r.terminals
        ]
        for who, terminal_id, strategy in uses:
            found = terminals.get(terminal_id)
            if found is None:
                continue  # reported by the reference checks
            caps = found.capabilities
            if not caps.reservations:
                raise ValueError(
                    f"{who}: terminal {terminal_id!r} cannot pre-authorise (reservations = "
                    f"false), and every pricing strategy holds an amount first"
                )
            if "card" in self.charger.start_paths and not caps.card_first:
                raise ValueError(
                    f'{who}: start_paths has "card" (a card read first), and terminal '
                    f"{terminal_id!r} cannot read a card before the amount (card_first)"
                )
            if strategy == "incremental" and not caps.incremental:
                raise ValueError(
                    f'{who}: the "incremental" strategy needs top-ups, and terminal '
                    f"{terminal_id!r} has none (set incremental = true if it can, or use "
                    f'"fixed" or "target")'
                )

    def _check_evse_priced(self, evse: EvseSettings) -> None:
        """Every EVSE can be priced, in a currency its terminal charges in: a session that
        cannot be priced holds the driver's money with no cost cap, no capture and no release
        until the hold lapses. Energy given away is a setting, explicit and capped."""
        tariff_id = evse.tariff or self.pricing.default_tariff
        if tariff_id is None:
            if evse.free_vend_kwh is None:
                raise ValueError(
                    f"evse {evse.id!r} has no tariff (neither its own nor pricing.default_tariff)"
                    ": give it one, or set its free_vend_kwh to give energy away explicitly"
                )
            return
        if evse.free_vend_kwh is not None:
            raise ValueError(
                f"evse {evse.id!r}: free vend is for an EVSE without a tariff, and it has "
                f"{tariff_id!r}"
            )
        currency = next(
            (str(t.get("currency")) for t in self.pricing.tariffs if str(t.get("id")) == tariff_id),
            None,
        )
        charges = self.terminal_currency(evse.terminal)
        if currency != charges:
            raise ValueError(
                f"evse {evse.id!r} is priced with tariff {tariff_id!r} in {currency}, but its "
                f"terminal {evse.terminal!r} charges in {charges}: give the EVSE a tariff in "
                f"{charges}"
            )

    def terminal_currency(self, terminal_id: str) -> str:
        found = next((t for t in self.terminals if t.id == terminal_id), None)
        return (found.currency if found and found.currency else None) or self.site.currency

    def _check_routes(self) -> None:
        """A route's terminals charge in one currency, and every tariff its payments can be
        priced with is in that currency: refused here, not at the first session."""
        ids = {t.id for t in self.terminals}
        tariffs = {str(t.get("id")): str(t.get("currency")) for t in self.pricing.tariffs}
        evses = {e.id: e for e in self.charger.evses}
        if len({r.id for r in self.routes}) != len(self.routes):
            raise ValueError("route ids must be unique")
        for r in self.routes:
            unknown = [t for t in r.terminals if t not in ids]
            if unknown:
                raise ValueError(
                    f"route {r.id!r} names terminal(s) {unknown}, which are not configured"
                )
            currencies = {self.terminal_currency(t) for t in r.terminals}
            if len(currencies) != 1:
                raise ValueError(f"route {r.id!r} mixes terminals charging in {sorted(currencies)}")
            (currency,) = currencies
            missing = [e for e in r.evses if e not in evses]
            if missing:
                raise ValueError(
                    f"route {r.id!r} names EVSE(s) {missing}, which are not configured"
                )
            if r.tariff is not None and r.tariff not in tariffs:
                raise ValueError(
                    f"route {r.id!r} names tariff {r.tariff!r}, which is not configured"
                )
            priced = (
                {r.tariff}
                if r.tariff
                else {
                    e.tariff or self.pricing.default_tariff
                    for eid, e in evses.items()
                    if not r.evses or eid in r.evses
                }
            )
            for tariff in sorted(t for t in priced if t):
                if tariffs.get(tariff) != currency:
                    raise ValueError(
                        f"route {r.id!r} charges in {currency} but tariff {tariff!r} is in "
                        f"{tariffs.get(tariff)}: give the route a tariff in {currency}"
                    )
            if r.fixed_hold is not None and currency not in r.fixed_hold:
                raise ValueError(
                    f"route {r.id!r}: fixed_hold has no amount in its currency {currency}"
                )
            if currency != self.site.currency and (r.hold_min is None or r.hold_max is None):
                raise ValueError(
                    f"route {r.id!r} charges in {currency}, not the site's {self.site.currency}: "
                    f"give its hold_min and hold_max in {currency}"
                )
            strategy = r.strategy or self.pricing.strategy
            fixed = r.fixed_hold or self.pricing.fixed_hold
            if strategy == "fixed" and currency not in fixed:
                raise ValueError(f"route {r.id!r}: the fixed hold has no amount in {currency}")
            if (
                strategy == "incremental"
                and currency != self.site.currency
                and (r.incremental_initial is None or r.incremental_step is None)
            ):
                raise ValueError(
                    f"route {r.id!r} charges in {currency}, not the site's {self.site.currency}: "
                    f"give its incremental_initial and incremental_step in {currency}"
                )
            if currency != self.site.currency and (
                r.safety_margin is None or r.min_partial_approval is None
            ):
                raise ValueError(
                    f"route {r.id!r} charges in {currency}, not the site's {self.site.currency}: "
                    f"give its safety_margin and min_partial_approval in {currency}"
                )
            for name, amount in (
                ("hold_min", r.hold_min),
                ("hold_max", r.hold_max),
                ("incremental_initial", r.incremental_initial),
                ("incremental_step", r.incremental_step),
                ("safety_margin", r.safety_margin),
                ("min_partial_approval", r.min_partial_approval),
                *((f"fixed_hold.{c}", a) for c, a in (r.fixed_hold or {}).items()),
            ):
                if amount is not None:
                    try:
                        Money.parse(
                            str(amount), currency if "." not in name else name.split(".")[1]
                        )
                    except AmountError as exc:
                        raise ValueError(f"route {r.id!r}: {name}: {exc}") from None
