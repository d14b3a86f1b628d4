"""Routing: by card brand and BIN (card read first), by EVSE, country and currency; failover
after repeated technical failures and recovery; config validation of inconsistent routes; and
amounts in each currency's own minor units (0 and 3 decimals)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.sim.terminal import SimConfig
from gateway.errors import ConfigError
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.preauth import HoldPolicy
from gateway.payments.routing import CardSeen, Choice, Health, Route, choose
from gateway.payments.session import State, transition
from gateway.payments.tariff import Dimension, PriceComponent, Tariff, TariffElement
from gateway.runtime.app import Daemon
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.settings import parse_settings
from tests.helpers import pty_terminal, running
from tests.payments.fixtures import T0, policy
from tests.site_rig import site_toml, tariff_toml

MC = CardSeen.from_masked("MasterCard", "541333******0074")
VISA = CardSeen.from_masked("VISA", "411111******1111")
ROUTES = (
    Route("visa-b", ("t2",), "EUR", brands=frozenset({"visa"})),
    Route("corporate", ("t3",), "EUR", bins=((541300, 541399),)),
    Route("default", ("t1", "t2"), "EUR"),
)


def test_by_brand_and_bin_when_the_card_was_read_first() -> None:
    health = Health()
    assert choose(ROUTES, "E1", "DE", health, VISA) == Choice("visa-b", "t2", "EUR", None)
    assert choose(ROUTES, "E1", "DE", health, MC) == Choice("corporate", "t3", "EUR", None)
    other = CardSeen.from_masked("MasterCard", "222100******0001")
    assert choose(ROUTES, "E1", "DE", health, other) == Choice("default", "t1", "EUR", None)
    # not read yet: a route that needs the card never matches
    assert choose(ROUTES, "E1", "DE", health) == Choice("default", "t1", "EUR", None)
    # the card is at t2: only a route through t2 can take it
    assert choose(ROUTES, "E1", "DE", health, MC, at_terminal="t2") == Choice(
        "default", "t2", "EUR", None
    )
    assert "no route takes this card" in str(
        choose(ROUTES[:2], "E1", "DE", health, MC, at_terminal="t2")
    )


def test_by_evse_country_and_currency() -> None:
    routes = (
        Route("ch", ("t-chf",), "CHF", countries=frozenset({"CH"})),
        Route("bay-9", ("t-9",), "EUR", evses=frozenset({"E9"})),
        Route("eur", ("t1",), "EUR"),
    )
    health = Health()
    assert choose(routes, "E1", "CH", health) == Choice("ch", "t-chf", "CHF", None)
    assert choose(routes, "E9", "DE", health) == Choice("bay-9", "t-9", "EUR", None)
    assert choose(routes, "E1", "DE", health) == Choice("eur", "t1", "EUR", None)
    assert choose(routes[:2], "E1", "DE", health) == "no route for EVSE E1"


def test_failover_after_consecutive_technical_failures_and_back_after_a_probe() -> None:
    health = Health(failover_after=3)
    for _ in range(2):
        health.failed("t1")
    chosen = choose(ROUTES, "E1", "DE", health)
    assert isinstance(chosen, Choice) and chosen.terminal == "t1"
    health.succeeded("t1")  # a success in between: the count starts again
    for _ in range(3):
        health.failed("t1")
    assert health.down() == ["t1"]
    assert choose(ROUTES, "E1", "DE", health) == Choice("default", "t2", "EUR", None)
    for _ in range(3):
        health.failed("t2")
    assert "every terminal of route default is out" in str(choose(ROUTES, "E1", "DE", health))
    health.succeeded("t1")  # the probe (a status enquiry) answered
    assert choose(ROUTES, "E1", "DE", health) == Choice("default", "t1", "EUR", None)


SITE = site_toml(
    None,
    {"t1": "tcp://127.0.0.1:20007", "tj": "tcp://127.0.0.1:20008"},
    site="S",
    zvt_pin=None,
    terminal_keys={"tj": 'currency = "JPY"'},
    default_tariff="EUR-T",
    tariffs=[
        tariff_toml("EUR-T", vat=None),
        tariff_toml("JPY-T", currency="JPY", price="55", vat=None),
    ],
)


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        (
            'terminals = ["tj"]\nhold_min = "500"\nhold_max = "20000"\nfixed_hold = { JPY = "5000" }',
            "route 'jp' charges in JPY but tariff 'EUR-T' is in EUR",
        ),
        ('terminals = ["t1", "tj"]', "route 'jp' mixes terminals charging in ['EUR', 'JPY']"),
        ('terminals = ["t9"]', "names terminal(s) ['t9']"),
        (
            'terminals = ["tj"]\ntariff = "JPY-T"\nfixed_hold = { JPY = "5000" }',
            "give its hold_min and hold_max in JPY",
        ),
        (
            'terminals = ["tj"]\ntariff = "JPY-T"\nhold_min = "5.50"\nhold_max = "20000"\nfixed_hold = { JPY = "5000" }'
            '\nsafety_margin = "100"\nmin_partial_approval = "1000"',
            "hold_min: '5.50' has more decimals than JPY allows (0)",
        ),
        ('terminals = ["t1"]\nbins = ["499999-400000"]', "ends before it starts"),
    ],
)
def test_inconsistent_routes_are_refused_by_config_validate(route: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(SITE + f'\n[[routes]]\nid = "jp"\n{route}\n', "<routes>")
    assert problem in str(raised.value)


def test_a_consistent_zero_decimal_route_is_accepted() -> None:
    route = (
        'terminals = ["tj"]\ntariff = "JPY-T"\nhold_min = "500"\nhold_max = "20000"\n'
        'fixed_hold = { JPY = "5000" }\nsafety_margin = "100"\nmin_partial_approval = "1000"'
    )
    settings = parse_settings(SITE + f'\n[[routes]]\nid = "jp"\n{route}\n', "<routes>")
    assert settings.routes[0].terminals == ["tj"]


@pytest.mark.parametrize(
    ("currency", "price", "hold", "expected"),
    [("JPY", "55", 5000, 550), ("KWD", "0.125", 15_000, 1250), ("EUR", "0.50", 5000, 500)],
)  # 10 kWh each: 0, 3 and 2 decimals
def test_amounts_in_each_currencys_minor_units(
    currency: str, price: str, hold: int, expected: int
) -> None:
    tariff = Tariff(
        f"T-{currency}",
        currency,
        (TariffElement((PriceComponent(Dimension.ENERGY, Decimal(price), None, 1),)),),
    )
    hp = HoldPolicy(
        strategy="fixed", fixed_minor={currency: hold}, min_minor=1, max_minor=10 * hold
    )
    pol = policy(route_holds={"r": hp}, route_tariffs={"r": tariff})
    s = transition(
        None, e.CardPresented("s", "card", "E1", "T1", currency, route="r"), T0, pol
    ).session
    assert s is not None and s.hold_minor == hold and s.tariff_id == f"T-{currency}"
    steps: list[e.Event] = [
        e.TerminalResultArrived(
            session_id="s",
            event_id="pa",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=hold,
            ref="7",
        ),
        e.ChargerStarted("s", "st", 0),
        e.ChargerStopped(session_id="s", event_id="sp", meter_wh=10_000),
    ]
    for n, ev in enumerate(steps):
        s = transition(s, ev, T0 + timedelta(minutes=n), pol).session
    assert s is not None and s.state is State.CAPTURING and s.bill.price_minor == expected
    t = transition(
        s,
        e.TerminalResultArrived(
            session_id="s",
            event_id="cap",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=expected,
            ref="8",
        ),
        T0,
        pol,
    )
    assert (
        t.session is not None
        and t.session.captured_minor == expected
        and t.session.currency == currency
    )
    assert any(
        isinstance(x, c.Enqueue) and x.payload["captured_minor"] == expected for x in t.commands
    )


async def test_the_daemon_fails_over_to_the_next_terminal_of_the_route(tmp_path: Path) -> None:
    """t1's device is gone: after its failed registration the route's next terminal takes the
    payment, end to end on the simulator; t1 is reported out."""
    charger = SimulatedCharger(["E1"])
    async with pty_terminal(SimConfig(password="123456", card_wait_s=0.05)) as (_sim, pty):
        devices = {"t1": f"serial://{tmp_path / 'no-such-device'}", "t2": f"serial://{pty}"}
        routes = '[routing]\nfailover_after = 1\n[[routes]]\nid = "main"\nterminals = ["t1", "t2"]'
        text = site_toml(tmp_path / "r.sqlite3", devices, site="R", vat=None, extra=routes)
        async with (
            running(Daemon(parse_settings(text, "<failover>"), charger=charger)) as daemon,
            asyncio.timeout(40),
        ):
            await daemon.ready.wait()
            assert daemon.engine is not None and daemon.engine.status.health.down() == ["t1"]
            charger.plug_in("E1", EvsePlan(energy_wh=2_000, step_wh=1_000))
            while not (rows := daemon.store.sessions()) or not rows[0]["final"]:
                await asyncio.sleep(0.05)
    await charger.close()
    (row,) = rows
    assert (
        row["state"] == "completed"
        and row["data"]["terminal"] == "t2"
        and row["data"]["captured_minor"] == 100
    )
    assert "route main: terminal t2, EUR" in row["data"]["notes"]
