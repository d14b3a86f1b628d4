"""From Settings to the engine's parts: policy (holds, tariffs, timings), terminal drivers,
charger link and the engine worker. Kept out of app.py so the composition root stays short."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from drivers.base import PaymentTerminal
from drivers.money import Money
from firmware_bridge.everest import EverestEvse, EverestMapping
from firmware_bridge.link import BrokerSettings, ContractMapping, Mapping
from gateway.fiscal.profiles import PROFILES
from gateway.ocpi.charger import OcpiChargerLink
from gateway.payments.charger import ChargerLink
from gateway.payments.preauth import HoldPolicy
from gateway.payments.routing import Health, Route
from gateway.payments.schemes import Validity
from gateway.payments.session import Policy
from gateway.payments.tariff_ocpi import tariff_from_ocpi
from gateway.runtime import terminal_registry
from gateway.runtime.charger import SimulatedCharger
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_parts import (
    OnlineModifications,
    SiteRules,
    TerminalFacts,
    WorkerStatus,
)
from gateway.runtime.engine_worker import EngineWorker
from gateway.runtime.mqtt_charger import MqttChargerLink
from gateway.runtime.terminal_registry import BuildContext
from gateway.settings import Settings, TerminalSettings
from gateway.store import Store


def _minor(amount: object, currency: str) -> int:
    return Money.parse(str(amount), currency).minor


def build_policy(settings: Settings) -> Policy:
    p = settings.pricing
    cur = settings.site.currency
    hold = HoldPolicy(
        strategy=p.strategy,
        fixed_minor={code: _minor(v, code) for code, v in p.fixed_hold.items()},
        min_minor=_minor(p.hold_min, cur),
        max_minor=_minor(p.hold_max, cur),
        target_margin_pct=p.target_margin_pct,
        assumed_power_kw=p.assumed_power_kw,
        incremental_initial_minor=_minor(p.incremental_initial, cur),
        incremental_step_minor=_minor(p.incremental_step, cur),
    )
    tariffs = {str(t["id"]): tariff_from_ocpi(t) for t in p.tariffs}
    by_evse = {evse.id: tariffs[evse.tariff] for evse in settings.charger.evses if evse.tariff}
    if p.default_tariff is not None:
        by_evse["*"] = tariffs[p.default_tariff]
    return Policy(
        hold=hold,
        tariffs=by_evse,
        tz=ZoneInfo(settings.site.timezone),
        start_timeout=timedelta(seconds=p.start_timeout_s),
        retry_initial=timedelta(seconds=p.retry_initial_s),
        retry_max=timedelta(seconds=p.retry_max_s),
        validity=_validity(settings),
        answer_timeout=timedelta(seconds=p.answer_timeout_s),
        bill_without_energy=p.bill_without_energy,
        topup_terminals=frozenset(t.id for t in settings.terminals if t.capabilities.incremental),
        capabilities={t.id: t.capabilities for t in settings.terminals},
        stop_before_expiry=timedelta(hours=p.stop_before_expiry_hours),
        safety_margin_minor=_minor(p.safety_margin, cur),
        min_partial_minor=_minor(p.min_partial_approval, cur),
        fiscal=PROFILES[settings.fiscal.profile],
        fiscal_wait=timedelta(seconds=settings.fiscal.wait_s),
        e_receipt_url=settings.fiscal.e_receipt_url,
        display_only=frozenset(t.id for t in settings.terminals if not t.printer),
        rated_power_w={
            e.id: int(e.rated_power_kw * 1000) for e in settings.charger.evses if e.rated_power_kw
        },
        meter_silence={
            e.id: timedelta(seconds=e.meter_silence_s)
            for e in settings.charger.evses
            if e.meter_silence_s is not None
        },
        free_vend_wh={
            e.id: int(e.free_vend_kwh * 1000)
            for e in settings.charger.evses
            if e.free_vend_kwh is not None
        },
        route_holds={
            r.id: route.hold
            for r, route in zip(settings.routes, build_routes(settings, hold), strict=True)
            if route.hold is not None
        },
        route_tariffs={r.id: tariffs[r.tariff] for r in settings.routes if r.tariff},
        route_margins=_route_margins(settings),
        online_deadlines={
            t.id: timedelta(seconds=settings.acquirers[t.modifications].webhook_deadline_s)
            for t in settings.terminals
            if t.modifications in settings.acquirers
        },
        no_card_present_refunds=frozenset(
            t.id for t in settings.terminals if not t.card_present_refunds
        ),
    )


def _route_margins(settings: Settings) -> dict[str, tuple[int, int]]:
    """A route's own safety margin and minimum partial approval, in its currency (config
    validation requires both for a route in another currency than the site's; a route in the
    site's currency may give either, the other is the site's)."""
    out = {}
    p = settings.pricing
    for r in settings.routes:
        if r.safety_margin is None and r.min_partial_approval is None:
            continue
        cur = settings.terminal_currency(r.terminals[0])
        margin = p.safety_margin if r.safety_margin is None else r.safety_margin
        partial = (
            p.min_partial_approval if r.min_partial_approval is None else r.min_partial_approval
        )
        out[r.id] = (_minor(margin, cur), _minor(partial, cur))
    return out


def build_routes(settings: Settings, site_hold: HoldPolicy) -> list[Route]:
    """The configured routes, each with its acquirer profile's hold policy (amounts in the
    route's own currency: a 0- or 3-decimal currency has its own minor units)."""
    out = []
    for r in settings.routes:
        cur = settings.terminal_currency(r.terminals[0])
        hold = None
        own = (r.hold_min, r.hold_max, r.incremental_initial, r.incremental_step)
        if r.strategy or r.fixed_hold or any(a is not None for a in own):
            hold = replace(
                site_hold,
                strategy=r.strategy or site_hold.strategy,
                fixed_minor={code: _minor(v, code) for code, v in (r.fixed_hold or {}).items()}
                or site_hold.fixed_minor,
                min_minor=_minor(r.hold_min, cur)
                if r.hold_min is not None
                else site_hold.min_minor,
                max_minor=_minor(r.hold_max, cur)
                if r.hold_max is not None
                else site_hold.max_minor,
                incremental_initial_minor=_minor(r.incremental_initial, cur)
                if r.incremental_initial is not None
                else site_hold.incremental_initial_minor,
                incremental_step_minor=_minor(r.incremental_step, cur)
                if r.incremental_step is not None
                else site_hold.incremental_step_minor,
            )
        bins = tuple((int(b[:6]), int(b[-6:])) for b in r.bins)
        out.append(
            Route(
                r.id,
                tuple(r.terminals),
                cur,
                frozenset(r.evses),
                frozenset(r.countries),
                frozenset(r.brands),
                bins,
                hold,
            )
        )
    return out


def _validity(settings: Settings) -> Validity:
    def hours(table: dict[str, int]) -> dict[str, timedelta]:
        return {scheme: timedelta(hours=h) for scheme, h in table.items()}

    table = hours(settings.pricing.hold_validity_hours)
    return Validity(
        default=table.pop("default", Validity().default),
        schemes=table,
        terminals={
            t.id: hours(t.hold_validity_hours) for t in settings.terminals if t.hold_validity_hours
        },
    )


def build_terminals(settings: Settings) -> dict[str, PaymentTerminal]:
    return {t.id: build_terminal(settings, t) for t in settings.terminals}


def build_terminal(settings: Settings, t: TerminalSettings) -> PaymentTerminal:
    """The terminal's driver, found by its protocol in the one registry."""
    context = BuildContext(
        currency=t.currency or settings.site.currency, state_dir=settings.storage.path.parent
    )
    return terminal_registry.build(t, context)


def build_charger(settings: Settings, store: Store | None = None) -> ChargerLink:
    if settings.charger.mode == "simulated":
        return SimulatedCharger([e.id for e in settings.charger.evses])
    if settings.charger.mode == "ocpi":
        locations = {e.id: e.location for e in settings.charger.evses if e.location}
        party = (settings.upstream.country_code, settings.upstream.party_id)
        return OcpiChargerLink(None, "", "", locations, party, lambda: datetime.now(UTC), store)
    c = settings.charger
    broker = BrokerSettings(
        url=c.broker,
        prefix=c.topic_prefix,
        client_id=c.client_id,
        username=c.username,
        password=c.password.reveal() if c.password else None,
        ca_file=str(c.ca_file) if c.ca_file else None,
    )
    mapping: Mapping = ContractMapping(c.topic_prefix, {e.id: e.charger for e in c.evses})
    if c.mapping == "everest":
        evses = [EverestEvse(e.id, str(e.everest_module), e.connector) for e in c.evses]
        mapping = EverestMapping(c.everest_token_provider, c.everest_auth_consumer, evses)
    return MqttChargerLink(broker, {e.id for e in c.evses}, mapping)


def build_engine(
    settings: Settings,
    store: Store,
    clock: Callable[[], datetime],
    charger: ChargerLink | None = None,
) -> tuple[EngineWorker, dict[str, PaymentTerminal], ChargerLink]:
    terminals = build_terminals(settings)
    link = charger or build_charger(settings, store)
    host = EngineHost(store, build_policy(settings), clock)
    terminal_currency = {t.id: settings.terminal_currency(t.id) for t in settings.terminals}
    routes = {
        e.id: EngineWorker.route(e.terminal, terminal_currency[e.terminal])
        for e in settings.charger.evses
    }
    devices = {t.id: t.device for t in settings.terminals}
    protocols = {t.id: t.protocol for t in settings.terminals}
    meter_keys = {e.id: e.meter_public_key for e in settings.charger.evses if e.meter_public_key}
    facts = TerminalFacts(
        devices=devices,
        protocols=protocols,
        end_of_day_at={t.id: t.end_of_day for t in settings.terminals if t.end_of_day},
        end_of_day_retry_s=settings.daemon.end_of_day_retry_s,
        probe_every_s=settings.routing.probe_every_s,
        currencies=terminal_currency,
    )
    rules = SiteRules(
        site=settings.site.id,
        country=settings.site.country,
        plug_starts="plug" in settings.charger.start_paths,
        card_starts="card" in settings.charger.start_paths,
        # over OCPI the EVSE named is the CPO's evse_uid (or unknown after a restart), not who
        # sent the message: the CPO is one authenticated party, its sessions are its own
        evse_is_sender=settings.charger.mode != "ocpi",
        meter_keys=meter_keys,
        router=tuple(build_routes(settings, host.policy.hold)),
    )
    status = WorkerStatus(health=Health(settings.routing.failover_after))
    online = OnlineModifications(
        routes={t.id: t.modifications for t in settings.terminals if t.modifications != "terminal"},
        acquirers=dict(settings.acquirers),
    )
    worker = EngineWorker(host, terminals, link, routes, facts, rules, status, online)
    return worker, terminals, link
