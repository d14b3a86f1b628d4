"""The engine host over a real SQLite store: one step per event, duplicates change nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from drivers.base import Capabilities, Outcome
from gateway.payments import events as e
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.online_orphans import online_orphans
from gateway.store import Store
from tests.payments.fixtures import Clock, policy


def test_redelivered_events_are_no_ops_and_every_step_is_journaled(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "h.sqlite3", clock=clock)
    host = EngineHost(store, policy(), clock)
    card = e.CardPresented("s1", "card", "E1", "T1", "EUR")
    first = host.handle(card)
    assert first.applied and [type(x).__name__ for x in first.commands] == ["Preauthorize"]
    again = host.handle(card)
    assert not again.applied and again.commands == ()  # no second pre-authorisation
    approved = e.TerminalResultArrived(
        session_id="s1",
        event_id="r1",
        operation=e.Operation.PREAUTHORIZE,
        outcome=Outcome.APPROVED,
        amount_minor=5000,
        ref="4",
    )
    assert [type(x).__name__ for x in host.handle(approved).commands] == ["AuthorizeCharger"]
    assert host.handle(approved).commands == ()
    clock.advance(60)
    host.handle(e.ChargerStarted("s1", "st", 0))
    host.handle(e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=4000))
    done = host.handle(
        e.TerminalResultArrived(
            session_id="s1",
            event_id="c1",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=None,
            ref="5",
        )
    )
    assert done.session is not None and done.session.state.value == "completed"
    assert [j["kind"] for j in store.journal("s1")] == [
        "CardPresented",
        "TerminalResultArrived",
        "ChargerStarted",
        "ChargerStopped",
        "TerminalResultArrived",
    ]
    payments = {p["kind"]: p["amount_minor"] for p in store.payments("s1")}
    assert payments["preauth"] == 5000 and payments["capture"] + payments["release"] == 5000
    assert [m.message_id for m in store.outbox.list()] == ["s1:outcome"]


def test_sweep_releases_unowned_holds_but_waits_for_preauths_in_flight(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "s.sqlite3", clock=clock)
    host = EngineHost(store, policy(), clock)
    host.handle(e.CardPresented("s1", "card", "E1", "T1", "EUR"))
    assert (
        host.sweep("T1", ("8",), "EUR", "x") == []
    )  # s1's pre-auth is in flight: 8 may be its hold
    host.handle(
        e.TerminalResultArrived(
            session_id="s1",
            event_id="r",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref="7",
        )
    )
    commands = host.sweep("T1", ("7", "8"), "EUR", "y")  # 7 is s1's; 8 belongs to nobody
    assert [(type(x).__name__, getattr(x, "ref", None)) for x in commands] == [("Release", "8")]


def test_an_online_terminal_is_swept_only_for_the_holds_nobody_can_own(tmp_path: Path) -> None:
    """Its holds are captured online: the terminal still lists them as open, and releasing
    them would cancel payments already captured. Only what ``online_orphans`` leaves reaches
    the sweep (nothing, from a driver that cannot name the acquirer's payment); what the sweep
    is given it releases, at the acquirer (tests/acquirer/test_online_sweep.py)."""
    clock = Clock()
    store = Store.open(tmp_path / "s.sqlite3", clock=clock)
    online = replace(policy(), online_deadlines={"T1": timedelta(hours=1)})
    host = EngineHost(store, online, clock)
    assert online_orphans(host, "T1", ("8",), object()) == ()
    assert host.sweep("T1", ("8",), "EUR", "x") != []
    assert EngineHost(store, policy(), clock).sweep("T1", ("9",), "EUR", "x") != []


def test_no_sweep_of_a_terminal_that_cannot_release_an_uncompleted_hold(tmp_path: Path) -> None:
    """release_open = false: a hold nobody owns can only lapse; an orphan session each sweep
    would release nothing and pile up."""
    clock = Clock()
    store = Store.open(tmp_path / "s.sqlite3", clock=clock)
    lapsing = replace(policy(), capabilities={"T1": Capabilities(release_open=False)})
    assert EngineHost(store, lapsing, clock).sweep("T1", ("8",), "EUR", "x") == []
    assert store.sessions() == []


def test_a_second_writer_is_noticed_and_the_step_computed_again_from_the_database(
    tmp_path: Path,
) -> None:
    """The host keeps each open session as it last stored it, and the store its payment rows
    and the journal's head. Another process writing the file (a technician's command, a second
    host) makes all of them stale: the next step is computed from what the database holds,
    nothing the other process wrote is overwritten, and the journal still chains."""
    clock = Clock()
    path = tmp_path / "w.sqlite3"
    store = Store.open(path, clock=clock)
    host = EngineHost(store, policy(), clock)
    host.handle(e.CardPresented("s1", "card", "E1", "T1", "EUR"))
    host.handle(
        e.TerminalResultArrived(
            session_id="s1",
            event_id="r1",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref="4",
        )
    )
    host.handle(e.ChargerStarted("s1", "st", 0))
    # another process moves the session on: the charger reported it stopped
    other_store = Store.open(path, clock=clock)
    other = EngineHost(other_store, policy(), clock)
    clock.advance(600)
    stopped = other.handle(e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=4000))
    assert (
        stopped.applied
        and stopped.session is not None
        and stopped.session.state.value == "capturing"
    )
    other_store.close()
    # our host's copy says "charging"; a meter value must not be applied to it
    late = host.handle(e.MeterValue("s1", "m9", 9000))
    assert late.session is not None and late.session.state.value == "capturing"
    assert late.session.metering.billed_energy_wh == 4000
    done = host.handle(
        e.TerminalResultArrived(
            session_id="s1",
            event_id="c1",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=None,
            ref="5",
        )
    )
    assert done.session is not None and done.session.state.value == "completed"
    payments = {p["kind"]: p["amount_minor"] for p in store.payments("s1")}
    assert payments["preauth"] == 5000 and payments["capture"] + payments["release"] == 5000
    assert store.verify_journal().ok


def test_an_enquiry_deferred_for_a_preauth_in_flight_is_asked_again_soon(tmp_path: Path) -> None:
    """While another pre-auth on the terminal is in flight its fresh hold is not owned yet, so
    a lost pre-auth's enquiry is deferred: the terminal is busy, not silent, and the backoff
    does not grow (a long queue at one terminal must not push the resolution out by hours)."""
    clock = Clock()
    store = Store.open(tmp_path / "d.sqlite3", clock=clock)
    p = policy()
    host = EngineHost(store, p, clock)
    host.handle(e.CardPresented("s1", "card", "E1", "T1", "EUR"))
    lost = host.handle(
        e.TerminalResultArrived(
            session_id="s1",
            event_id="r1",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.UNKNOWN,
        )
    )
    assert lost.session is not None and lost.session.state.value == "auth_unknown"
    host.handle(e.CardPresented("s2", "card", "E2", "T1", "EUR"))  # in flight on the same terminal
    for n in range(6):
        deferred = host.handle(e.OpenPreauthsReported("s1", f"q{n}", ("9",)))
        s = deferred.session
        assert s is not None and s.state.value == "auth_unknown" and s.timer is not None
        assert s.timer[1] - clock.now == p.retry_initial and s.attempts == 1
