"""Issue 26: amounts of a terminal reached only through ``[[routes]]``, in another currency
than the site's (item 10: its sweeps and end-of-day batches; and the site-currency hold
amounts a route in another currency inherits)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.sim.terminal import SimConfig
from gateway.errors import ConfigError
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.session import transition
from gateway.runtime.charger import SimulatedCharger
from gateway.runtime.engine_setup import build_engine, build_policy, build_routes
from gateway.settings import parse_settings
from gateway.store import Store
from tests.helpers import pty_terminal
from tests.site_rig import route_site

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def site(device: str) -> str:
    """Terminal t1 (EUR) on E1, and "tj" (JPY) at ``device`` that only the route "jp" names."""
    return route_site(
        "JPY",
        price="55",
        terminal="tj",
        route="jp",
        device=device,
        terminal_extra="incremental = true",
        pricing='strategy = "incremental"\nincremental_initial = "20.00"\n'
        'incremental_step = "15.00"\nsafety_margin = "0.50"',
        route_keys='hold_min = "500"\nhold_max = "20000"\nsafety_margin = "100"\n'
        'min_partial_approval = "1000"',
    )


async def test_a_route_only_terminal_closes_its_batch_in_its_own_currency(tmp_path: Path) -> None:
    """No EVSE's own terminal is "tj": its currency comes from its route, never "EUR"."""
    async with pty_terminal(SimConfig(password="123456", currency=392)) as (_sim, pty):
        own = 'incremental_initial = "3000"\nincremental_step = "2500"\n'
        settings = parse_settings(site(f"serial://{pty}") + own, "<route>")
        store = Store.open(tmp_path / "r.sqlite3")
        try:
            worker, _terminals, _link = build_engine(
                settings, store, lambda: datetime.now(UTC), SimulatedCharger(["E1"])
            )
            assert worker.runners["tj"].currency == "JPY"  # what its sweeps release in
            assert await worker.end_of_day("tj") == "done"
            (batch,) = store.end_of_day_batches(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
        finally:
            store.close()
    assert batch["currency"] == "JPY"


def test_a_route_in_another_currency_never_inherits_site_currency_minor_units() -> None:
    """The incremental first hold and step are configured in the site's currency (20.00 EUR
    = 2000 minor units): a JPY route must state its own, never use 2000 as yen."""
    with pytest.raises(ConfigError, match="give its incremental_initial and incremental_step"):
        parse_settings(site("tcp://127.0.0.1:10"), "<route>")
    own = 'incremental_initial = "3000"\nincremental_step = "2500"\n'
    settings = parse_settings(site("tcp://127.0.0.1:10") + own, "<route>")
    (route,) = build_routes(settings, build_policy(settings).hold)
    assert route.hold is not None
    assert (route.hold.incremental_initial_minor, route.hold.incremental_step_minor) == (3000, 2500)


def test_a_route_in_another_currency_states_its_own_margins() -> None:
    """[pricing] safety_margin (0.50 EUR = 50) and min_partial_approval (5.00 EUR = 500) are the
    site's minor units: a JPY route must give its own (never stop 50 yen below a hold, nor take
    a 500 yen partial approval as the 5.00 EUR minimum); config validate refuses it otherwise."""
    own = 'incremental_initial = "3000"\nincremental_step = "2500"\n'
    text = site("tcp://127.0.0.1:10") + own
    for line in ('safety_margin = "100"\n', 'min_partial_approval = "1000"\n'):
        with pytest.raises(ConfigError, match="give its safety_margin and min_partial_approval"):
            parse_settings(text.replace(line, ""), "<route>")
    with pytest.raises(ConfigError, match=r"safety_margin: '0\.5' has more decimals than JPY"):
        parse_settings(text.replace('"100"', '"0.5"'), "<route>")
    policy = build_policy(parse_settings(text, "<route>"))
    assert (policy.safety_margin("jp"), policy.min_partial("jp")) == (100, 1000)
    assert (policy.safety_margin(None), policy.min_partial(None)) == (50, 500)
    # the engine uses them: the charger's cap is the JPY hold less 100 yen, and a partial
    # approval of 900 yen is below the route's minimum
    start = e.CardPresented("s1", "card", "E1", "tj", "JPY", route="jp")
    t = transition(None, start, NOW, policy)
    assert t.session is not None
    approved = e.TerminalResultArrived(
        session_id="s1",
        event_id="r",
        operation=e.Operation("preauthorize"),
        outcome=Outcome.APPROVED,
        amount_minor=3000,
        ref="7",
    )
    after = transition(t.session, approved, NOW, policy)
    (cap,) = [cmd for cmd in after.commands if isinstance(cmd, c.AuthorizeCharger)]
    assert cap.max_cost_minor == 3000 - 100
    low = transition(t.session, replace(approved, amount_minor=900), NOW, policy)
    assert low.session is not None and "partial approval 900 below minimum" in low.session.notes[-1]
