"""A lost pre-auth the terminal cannot resolve, on a terminal whose modifications go to an
acquirer: cancelled at the acquirer by our merchant reference (issue 29). The engine's decision
(pure), the runner's modification (a real store), and the whole path with real parts."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.nexo import messages as nm
from drivers.nexo.asyncio.terminal import NexoTerminal
from gateway.acquirer.port import ModificationEvent
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import HoldStatus, sale_reference
from gateway.payments.session import Session, State, transition
from gateway.runtime.acquirer_runner import AcquirerRunner
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.acquirer import test_e2e_acquirer as e2e
from tests.payments.fixtures import T0, Clock, card_and_preauth, policy

rigs = e2e.rigs  # the real daemon, nexo POI and acquirer simulator on loopback
SID = "s1-0123456789abcdef"
ONLINE = policy(online_deadlines={"T1": timedelta(seconds=60)})


def lost(p: object = ONLINE) -> Session:
    """A session whose pre-auth answer was lost and whose enquiries all failed until the time
    to resolve it ran out."""
    started = transition(None, e.CardPresented(SID, "card", "E1", "T1", "EUR"), T0, ONLINE)
    assert started.session is not None
    lost = e.TerminalResultArrived(
        session_id=SID, event_id="r", operation=e.Operation.PREAUTHORIZE, outcome=Outcome.UNKNOWN
    )
    t = transition(started.session, lost, T0, ONLINE)
    assert t.session is not None and t.session.state is State.AUTH_UNKNOWN
    return t.session


def test_an_unresolved_pre_auth_on_an_online_terminal_is_cancelled_by_our_reference() -> None:
    late = T0 + ONLINE.resolve_auth_within + timedelta(seconds=1)
    failed = e.OpenPreauthsReported(SID, "q", (), failed=True)
    t = transition(lost(), failed, late, ONLINE)
    s = t.session
    assert s is not None and s.state is State.RELEASING, s and s.notes
    (release,) = [x for x in t.commands if isinstance(x, c.Release)]
    assert release.ref == f"by-reference:{sale_reference(SID)}" and release.held_minor == 0
    assert s.authorized_minor == 0  # its amount is unknown: nothing booked as held
    done = e.TerminalResultArrived(
        session_id=SID,
        event_id="w",
        operation=e.Operation.RELEASE,
        outcome=Outcome.APPROVED,
        for_ref=release.ref,
    )
    end = transition(s, done, late, ONLINE).session
    assert end is not None and end.state is State.VOIDED and end.open_minor == 0
    assert end.holds[0].status is HoldStatus.RELEASED
    # a terminal that settles at the card keeps the old way: left to the terminal sweep
    offline = policy()
    plain = transition(lost(), failed, late, offline).session
    assert plain is not None and plain.state is State.FAILED


def test_a_pre_auth_the_poi_cannot_tell_about_after_a_restart_is_cancelled_by_reference() -> None:
    """The crash campaign's violation: the POI made the hold while the daemon died; after the
    restart its ledger shows nothing and its last result is none. On a terminal whose
    modifications go online the session cancels by our reference (a next action and a
    deadline), never fails with the hold left unowned."""
    answered = e.OpenPreauthsReported(SID, "q", (), last=None)
    t = transition(lost(), answered, T0, ONLINE)
    s = t.session
    assert s is not None and s.state is State.RELEASING, s and s.notes
    (cancel,) = [x for x in t.commands if isinstance(x, c.Release)]
    assert cancel.ref == f"by-reference:{sale_reference(SID)}"
    assert s.timer is not None and s.next_deadline is not None  # waits for its webhook
    plain = transition(lost(), answered, T0, policy()).session  # the terminal settles: as before
    assert plain is not None and plain.state is State.FAILED


def release(key: str, ref: str, held: int) -> c.Release:
    return c.Release(
        key=key, session_id=SID, terminal="T1", ref=ref, held_minor=held, currency="EUR"
    )


async def test_a_release_without_a_psp_reference_is_a_cancel_by_merchant_reference(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "r.sqlite3", clock=clock)
    host = EngineHost(store, ONLINE, clock)
    taken: list[e.Event] = []
    runner = AcquirerRunner(
        host=host,
        routes={"T1": "adyen"},
        acquirers={},
        take=taken.append,
        references=no_psp,
    )
    ours = f"by-reference:{sale_reference(SID)}"
    for ref in (ours, "POI-TX-WITHOUT-PSP@2026-12-07T20:00:00"):
        key = f"{SID}:release:{ref}"
        await runner.execute(release(key, ref, 0))
        stored = store.acquirer.get(key)
        assert stored is not None and stored.status == "queued", taken
        m = stored.modification
        assert (m.kind, m.merchant_reference) == ("cancel_by_reference", sale_reference(SID))
    with_psp = f"{SID}:release:TX.8815000000000099"
    await runner.execute(release(with_psp, "TX.8815000000000099", 5000))
    stored = store.acquirer.get(with_psp)
    assert stored is not None and stored.modification.kind == "cancel"
    assert not taken  # nothing refused
    store.close()


async def lost_at_the_poi(rig: e2e.Rig) -> e2e.Site:
    """The daemon started and a car plugged in; the POI makes the reservation, its answer is
    lost and the POI never says what became of it."""
    rig.poi.config.lose_answers = 1
    rig.poi.config.in_progress = 1_000_000
    site = await rig.start()
    engine = site.daemon.engine
    assert engine is not None
    # time only: the lost pre-auth is asked about for 3 s (not an hour), the POI every 50 ms
    engine.host.policy = replace(engine.host.policy, resolve_auth_within=timedelta(seconds=3))
    terminal = site.daemon.terminals["a1"]
    assert isinstance(terminal, NexoTerminal)
    terminal.client.tracker.retry_s = 0.05
    await rig.plug(site)
    return site


async def test_a_lost_pre_auth_the_poi_cannot_resolve_is_cancelled_at_the_acquirer(
    rigs: e2e.Open,
) -> None:
    rig = await rigs()
    site = await lost_at_the_poi(rig)
    row = await site.wait_state("voided", "failed", "release_failed", timeout=40)
    data = row["data"]
    assert row["state"] == "voided", (row["state"], data["notes"])
    cancels = [m for m in rig.adyen.state.applied if m["what"] == "technicalCancel"]
    (cancel,) = cancels  # exactly one cancel by merchant reference
    (payment,) = [m.body for m in rig.poi.requests if isinstance(m.body, nm.PaymentRequest)]
    sale = payment.sale_data.sale_transaction_id.transaction_id
    assert cancel["paymentReference"] == sale == sale_reference(row["id"])
    assert data["open_minor"] == 0 and data["captured_minor"] == 0
    assert any("by our reference" in n for n in data["notes"]), data["notes"]
    (stored,) = site.modifications()
    assert (stored.modification.kind, stored.status) == ("cancel_by_reference", "confirmed")
    await asyncio.sleep(0.5)
    assert len([m for m in rig.adyen.state.applied if m["what"] == "technicalCancel"]) == 1


async def test_a_cancel_by_reference_without_its_webhook_stays_visible(rigs: e2e.Open) -> None:
    rig = await rigs(frozenset({"lost"}), deadline=1.5)
    site = await lost_at_the_poi(rig)
    await site.wait_modification("received", timeout=40)
    row = await site.wait_state("release_unknown", "release_retry", timeout=20)
    assert not site.row()["final"] and row["data"]["released_minor"] == 0  # never assumed
    _, out = await rig.evpay("reconcile")
    assert f"missing_webhook:{row['id']}:release:by-reference:" in out, out
    assert not rig.cpo.state.facs  # never an outcome we do not know


def webhook(psp: str, *, success: bool) -> ModificationEvent:
    return ModificationEvent(
        event="TECHNICAL_CANCEL",
        psp_reference=psp,
        original_reference=None,
        merchant_reference="",
        merchant_account="EVPayTest",
        success=success,
        amount=None,
        reason="" if success else "Transaction not found",
        event_date="2026-12-07T12:00:00+01:00",
        live=False,
    )


@pytest.mark.parametrize("success", [True, False])
async def test_only_a_successful_technical_cancel_books_the_release(
    tmp_path: Path, success: bool
) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "w.sqlite3", clock=clock)
    host = EngineHost(store, ONLINE, clock)
    taken: list[e.Event] = []
    runner = AcquirerRunner(
        host=host, routes={"T1": "adyen"}, acquirers={}, take=taken.append, references=no_psp
    )
    card_and_preauth(host.handle, SID, outcome=Outcome.UNKNOWN, event_id="r")
    clock.advance(ONLINE.resolve_auth_within.total_seconds() + 1)
    gave_up = host.handle(e.OpenPreauthsReported(SID, "q", (), failed=True))
    (release,) = [x for x in gave_up.commands if isinstance(x, c.Release)]
    await runner.execute(release)
    store.acquirer.received(release.key, "TC1", clock(), clock() + timedelta(seconds=60))
    store.acquirer.record_events("adyen", [webhook("TC1", success=success)], clock())
    runner.hand_over()
    (result,) = taken
    assert isinstance(result, e.TerminalResultArrived)
    assert result.outcome is (Outcome.APPROVED if success else Outcome.DECLINED)
    s = host.handle(result).session
    assert s is not None and s.open_minor == 0
    if success:
        assert s.state is State.VOIDED and s.holds[0].status is HoldStatus.RELEASED
    else:  # the hold may stand: asked about again, never booked released
        assert s.state is State.RELEASE_UNKNOWN and s.holds[0].status is not HoldStatus.RELEASED
        assert any("Transaction not found" in n for n in s.notes), s.notes
    store.close()


def no_psp(_terminal: str, ref: str) -> str | None:
    return ref.rpartition(".")[2] if "." in ref else None
