"""Issue 26 items 2 and 13, the engine's half: no hold for a session the engine cannot price (a
tariff in another currency than the terminal charges, or no tariff at all), and free vend only
when explicit, and capped. Each test failed on main."""

from __future__ import annotations

from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.session import transition
from tests.payments.fixtures import T0, policy
from tests.payments.test_money_corrections import SID, approved, run

# ---- item 2 (engine half): no hold a session cannot price ---------------------------------------


def test_no_hold_is_made_for_a_session_that_cannot_be_priced() -> None:
    t = transition(None, e.CardPresented("s", "card", "E1", "T1", "CHF"), T0, policy())
    assert not any(isinstance(x, c.Preauthorize) for x in t.commands)
    assert t.session is not None and t.session.final and not t.session.holds
    assert "CHF" in t.session.notes[-1]


# ---- item 13 (engine half): free vend only explicit, and capped ---------------------------------


def test_free_vend_stops_at_its_cap() -> None:
    free = {"tariffs": {}, "free_vend_wh": {"E1": 5000}}
    s = run(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, **free).session
    s = run(s, approved("preauthorize", 5000, 7), 0, **free).session
    s = run(s, e.ChargerStarted(SID, "st", 0), 1, **free).session
    t = run(s, e.MeterValue(SID, "mv", 6000), 2, **free)
    assert any(isinstance(x, c.StopCharger) for x in t.commands)
    assert t.session is not None and any("free vend" in n for n in t.session.notes)


def test_an_evse_without_a_tariff_and_without_free_vend_gets_no_hold() -> None:
    t = run(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), 0, tariffs={})
    assert not any(isinstance(x, c.Preauthorize) for x in t.commands)
