"""The terminal sweep on a terminal whose modifications go online (issue 29): a hold in the
POI's list that no session, open or owing or settled, can own and that no modification or
webhook of ours ever named is an orphan session cancelled at the acquirer by its pspReference;
every other hold in the list (captured online, the POI does not know) is left alone."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.money import Money
from drivers.nexo.asyncio.client import NexoClient, NexoOptions
from drivers.nexo.asyncio.terminal import NexoTerminal
from gateway.acquirer.port import Modification, ModificationEvent
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.session import State
from gateway.runtime import online_orphans as orphan_rules
from gateway.runtime.acquirer_runner import AcquirerRunner, driver_ledgers
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.online_orphans import online_orphans
from gateway.store import Store
from tests.acquirer import test_e2e_acquirer as e2e
from tests.payments.fixtures import Clock, card_and_preauth, policy

rigs = e2e.rigs  # the real daemon, nexo POI and acquirer simulator on loopback

ONLINE = policy(online_deadlines={"T1": timedelta(seconds=60)})


def ref(n: int) -> str:
    return f"TX.88150000000000{n:02d}@2026-12-07T12:00:00"


class Poi:
    """The driver's one duty here: the acquirer's reference read from a hold's reference."""

    @staticmethod
    def payment_reference(r: str) -> str | None:
        tid = r.rpartition("@")[0]
        return tid.rpartition(".")[2] if "." in tid else None


async def test_an_orphan_at_the_poi_of_an_online_terminal_is_cancelled_at_the_acquirer(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "o.sqlite3", clock=clock)
    host = EngineHost(store, ONLINE, clock)
    card_and_preauth(
        host.handle, "s-owned", ref(1)
    )  # a session's hold (open here; settled is the same)
    captured = Modification(
        "s-old:capture:x",
        "capture",
        payment_reference="8815000000000002",
        amount=Money(5, "EUR"),
        authorised=Money(5, "EUR"),
    )
    store.acquirer.enqueue("adyen", captured, clock())  # captured online long ago
    no_psp = "POI-TX-WITHOUT-PSP@2026-12-07T12:00:00"
    listed = (ref(1), ref(2), ref(3), no_psp)
    orphans = online_orphans(host, "T1", listed, Poi())
    assert orphans == (ref(3),)
    commands = host.sweep("T1", orphans, "EUR", "boot1")
    (release,) = [x for x in commands if isinstance(x, c.Release)]
    assert release.ref == ref(3) and release.session_id.startswith("orphan-T1-")
    orphan = host.load(release.session_id)
    assert orphan is not None and orphan.state is State.RELEASING  # a visible record
    assert orphan.timer is not None  # with its next action and deadline
    taken: list[e.Event] = []
    runner = AcquirerRunner(
        host=host,
        routes={"T1": "adyen"},
        acquirers={},
        take=taken.append,
        references=lambda _t, r: Poi.payment_reference(r),
    )
    await runner.execute(release)
    stored = store.acquirer.get(release.key)
    assert stored is not None and not taken
    assert (stored.modification.kind, stored.modification.payment_reference) == (
        "cancel",
        "8815000000000003",
    )
    # the next sweep: the cancel names it now, and the orphan session knows it
    assert online_orphans(host, "T1", listed, Poi()) == ()
    store.close()


def test_no_online_sweep_while_a_pre_auth_is_unresolved_or_cancelled_by_reference(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "p.sqlite3", clock=clock)
    host = EngineHost(store, ONLINE, clock)
    card_and_preauth(host.handle, "s-lost", outcome=Outcome.UNKNOWN, event_id="lost")
    assert host.sweep("T1", (ref(4),), "EUR", "b") == []  # its hold may be that one
    host.handle(e.OpenPreauthsReported("s-lost", "q", ()))  # -> cancelled by our reference
    s = host.load("s-lost")
    assert s is not None and s.state is State.RELEASING, s and s.notes
    assert online_orphans(host, "T1", (ref(4),), Poi()) == ()
    store.close()


async def test_the_daemon_sweeps_an_online_terminal_and_cancels_its_orphan(
    rigs: e2e.Open,
) -> None:
    """Through the real daemon: a reservation in the POI's ledger that no session knows (made
    while the sale system's record of it was lost) is an orphan session, cancelled at the
    simulated acquirer by its pspReference and voided on the CANCELLATION webhook."""
    rig = await rigs()
    site = await rig.start()
    engine = site.daemon.engine
    terminal = site.daemon.terminals["a1"]
    assert engine is not None and isinstance(terminal, NexoTerminal)
    terminal.client.note_hold("T000999.8815000000000999@2026-12-07T12:00:00.000Z", "open")
    stopping = asyncio.Event()
    sweep = asyncio.create_task(engine.runners["a1"].sweeper(stopping))
    try:
        row = await site.wait_state("voided", "release_unknown", "release_failed")
    finally:
        stopping.set()
        await sweep
    assert row["state"] == "voided" and row["id"].startswith("orphan-a1-"), row["data"]["notes"]
    (cancel,) = [m for m in rig.adyen.state.applied if m["what"] == "cancels"]
    assert cancel["payment"] == "8815000000000999"


def test_a_sweep_examines_the_oldest_refs_up_to_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A list longer than MAX_EXAMINED: its oldest refs are examined, the rest wait for a later
    run, and the sweep says so (a long list means holds nobody closes)."""
    clock = Clock()
    store = Store.open(tmp_path / "b.sqlite3", clock=clock)
    host = EngineHost(store, ONLINE, clock)
    card_and_preauth(host.handle, "s-owned", ref(1))
    monkeypatch.setattr(orphan_rules, "MAX_EXAMINED", 2)
    with caplog.at_level(logging.WARNING):
        assert online_orphans(host, "T1", (ref(1), ref(3), ref(4)), Poi()) == (ref(3),)
    assert [r.message for r in caplog.records] == ["sweep.online_refs_bounded"]
    store.close()


async def test_a_cancel_confirmed_online_closes_the_hold_in_the_drivers_ledger(
    tmp_path: Path,
) -> None:
    """The POI never hears of a cancel made at the acquirer: once its webhook settled it, the
    runner tells the nexo driver, whose state file keeps it closed over a restart, so the hold
    leaves its open list and the next sweep."""
    clock = Clock()
    store = Store.open(tmp_path / "l.sqlite3", clock=clock)
    host = EngineHost(store, ONLINE, clock)
    options = NexoOptions(url="http://127.0.0.1:9/nexo", state_path=tmp_path / "poi.json")
    poi = NexoTerminal("T1", options)
    poi.client.note_hold(ref(3), "open")
    (release,) = [
        x for x in host.sweep("T1", (ref(3),), "EUR", "boot1") if isinstance(x, c.Release)
    ]
    taken: list[e.Event] = []
    runner = AcquirerRunner(
        host=host,
        routes={"T1": "adyen"},
        acquirers={},
        take=taken.append,
        references=lambda _t, r: Poi.payment_reference(r),
        ledgers=driver_ledgers({"T1": poi}),
    )
    await runner.execute(release)
    store.acquirer.received(release.key, "8816000000000901", clock(), clock() + timedelta(60))
    cancelled = ModificationEvent(
        event="CANCELLATION",
        psp_reference="8816000000000901",
        original_reference="8815000000000003",
        merchant_reference=release.key,
        merchant_account="EVPayTest",
        success=True,
        amount=None,
        reason="",
        event_date="2026-12-07T12:00:00+01:00",
        live=False,
    )
    assert (await poi.open_preauthorizations()).open_refs == (ref(3),)
    store.acquirer.record_events("adyen", [cancelled], clock())
    runner.hand_over()
    assert taken, "the orphan session hears of its cancel"
    assert (await poi.open_preauthorizations()).open_refs == ()
    assert NexoClient(options).handles[ref(3)] == {"state": "reversed"}  # after a restart
    store.close()
