"""attack-money (round 3) with the engine host on a real store and the ZVT runtime: end-of-day
evidence against unconfirmed captures, a capture retrying for weeks, the last result asked
after a restart before any other money command, holds either side of an end of day,
corrections found behind ten thousand later CDRs (see test_attack_round3_money.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from pydantic import SecretStr

from drivers.base import Outcome
from drivers.sim.terminal import SimConfig
from gateway.cli.reconcile_cmd import load_facts
from gateway.ocpi.charger import OcpiChargerLink
from gateway.ocpi.models import Cdr
from gateway.ocpi.worker import UpstreamWorker
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.charger import (
    ChargerEvent,
    ChargeStopped,
    PriceCorrection,
)
from gateway.payments.reconcile import reconcile
from gateway.payments.session import State
from gateway.settings import SecretRef, UpstreamSettings
from gateway.store import InboxMessage, SessionRecord, Step, Store
from tests.attack.round3_rig import (
    MC,
    P_TOPUP,
    charge_at_host,
    close_day,
    make_host,
)
from tests.ocpi.cdrs import cdr
from tests.payments.fixtures import terminal_result as res
from tests.runtime.runner_rig import runner_rig


def test_a_refund_of_unknown_fate_in_the_batch_leaves_the_evidence_undecided(
    tmp_path: Path,
) -> None:
    """s1 captured 2.26 and its reversal's answer was lost; s2's capture of 2.26 is
    unconfirmed. The terminal counts 1 for 2.26: either the reversal failed and s2 was not
    captured, or the reversal stood and s2 was. The totals cannot tell: undecided."""
    host, clock, store = make_host(tmp_path)
    try:
        s1 = charge_at_host(host, clock, "s1", 10, Outcome.APPROVED)
        assert s1.state is State.COMPLETED
        refund = e.RefundRequested(session_id="s1", event_id="g", amount_minor=226, reason="x")
        host.handle(refund)
        clock.advance(60)
        lost = e.TerminalResultArrived(
            session_id="s1", event_id="rl", operation=e.Operation.REVERSAL, outcome=Outcome.UNKNOWN
        )
        host.handle(lost)
        clock.advance(60)
        s2 = charge_at_host(host, clock, "s2", 20, Outcome.UNKNOWN)
        assert s2.state is State.CAPTURE_UNCONFIRMED
        close_day(host, 1, 226)
        after = host.load("s2")
        assert after is not None and after.state is State.CAPTURE_UNCONFIRMED
    finally:
        store.close()


def test_totals_in_another_currency_decide_nothing_about_a_eur_capture(tmp_path: Path) -> None:
    host, clock, store = make_host(tmp_path)
    try:
        charge_at_host(host, clock, "s2", 20, Outcome.UNKNOWN)
        close_day(host, 1, 226, currency="JPY")
        s2 = host.load("s2")
        assert s2 is not None and s2.state is State.CAPTURE_UNCONFIRMED
    finally:
        store.close()


def test_two_unconfirmed_captures_of_one_amount_with_another_paid_one_stay_undecided(
    tmp_path: Path,
) -> None:
    """Two lost captures of 2.26 and one paid 2.26: the terminal counts 2 for 4.52. Either lost
    one could be the second booking: undecided, both."""
    host, clock, store = make_host(tmp_path)
    try:
        charge_at_host(host, clock, "s1", 10, Outcome.APPROVED)
        charge_at_host(host, clock, "s2", 20, Outcome.UNKNOWN)
        charge_at_host(host, clock, "s3", 30, Outcome.UNKNOWN)
        close_day(host, 2, 452)
        for sid in ("s2", "s3"):
            s = host.load(sid)
            assert s is not None and s.state is State.CAPTURE_UNCONFIRMED
        assert store.outbox.list(kind="session.outcome", limit=10) != []  # s1's only
        assert {m.payload["session_id"] for m in store.outbox.list(kind="session.outcome")} == {
            "s1"
        }
    finally:
        store.close()


def test_a_capture_retrying_for_weeks_does_not_block_the_terminals_end_of_day(
    tmp_path: Path,
) -> None:
    """A hold still open after a declined capture waits (capture_retry) for its next try: no
    transaction of it is at the terminal, and the other payments' batch must close."""
    host, clock, store = make_host(tmp_path)
    try:
        charge_at_host(host, clock, "s1", 10, Outcome.APPROVED)
        charge_at_host(host, clock, "s2", 20, Outcome.DECLINED)
        host.handle(e.OpenPreauthsReported("s2", "q", ("20",)))
        s2 = host.load("s2")
        assert s2 is not None and s2.state is State.CAPTURE_RETRY
        assert host.open_on_terminal("T1") is None
    finally:
        store.close()


# ---- the runtime: after a restart the last result is asked before any other money command -----


async def test_another_sessions_capture_waits_for_the_last_result_after_a_restart(
    tmp_path: Path,
) -> None:
    """The daemon dies after the terminal captured for s1, before the result was stored. The
    terminal was not reachable at the restart, so its last result is not asked yet when it is
    back; s2 (charging on E2 meanwhile) stops and its capture comes first. That capture must
    wait like a new pre-auth does, or it overwrites the evidence s1 is judged on."""
    config = SimConfig(password="123456", card_wait_s=0.05, result_ack_timeout_s=2.0)
    async with runner_rig(tmp_path, config) as rig:
        async with asyncio.timeout(60):
            first, heard = rig.runner(register_timeout_s=0.2)
            await first.register()
            await rig.run(first, heard, e.CardPresented("s1", "card", "E1", "T1", "EUR"))
            await rig.run(first, heard, e.ChargerStarted("s1", "st", 1000))
            await rig.run(first, heard, e.CardPresented("s2", "card", "E2", "T1", "EUR"))
            await rig.run(first, heard, e.ChargerStarted("s2", "st", 1000))
            rig.clock.advance(60)  # s2 started before s1's capture was sent
            stop = e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=3000)
            _capture, done = await rig.capture_unheard(stop)  # the daemon dies before the answer

            # the restart, the terminal unreachable then (not registered, not asked); back now
            second, heard = rig.runner(register_timeout_s=0.2)
            await rig.run(
                second, heard, e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=4000)
            )
            await second.ask_last_result()  # the probe finds it back and asks
            await rig.run(second, heard, e.Resumed("s1", "boot"))
        s1 = rig.host.load("s1")
        assert s1 is not None and s1.state is State.COMPLETED
        assert s1.holds[0].booking_ref == done.ref


def test_an_undecided_unconfirmed_capture_stays_listed_with_its_debt(tmp_path: Path) -> None:
    """The FAC of an unconfirmed capture is held; after an end of day that decides nothing the
    session is not forgotten: reconciliation lists it with what it owes."""
    host, clock, store = make_host(tmp_path)
    try:
        charge_at_host(host, clock, "s2", 20, Outcome.UNKNOWN)
        charge_at_host(host, clock, "s3", 30, Outcome.UNKNOWN)
        close_day(host, 1, 226)
        clock.advance(7 * 24 * 3600)
        now = clock()
        facts = load_facts(store, now - timedelta(days=30), now, now, upstream=False)
    finally:
        store.close()
    listed = {
        f.sessions: f.amount_minor
        for f in reconcile(facts).unexplained
        if f.kind == "capture_unconfirmed"
    }
    assert listed == {("s2",): 226, ("s3",): 226}


def test_holds_captured_either_side_of_an_end_of_day_count_in_their_own_batches(
    tmp_path: Path,
) -> None:
    """s1's hold 7 is captured, hold 8's capture is retried across an end of day (which no
    longer waits for it) and stands after it. s2's capture of the same 2.26 is unconfirmed.
    The second batch's 2.26 is s1's hold 8: s2 was not captured, and both batches reconcile."""
    host, clock, store = make_host(tmp_path, P_TOPUP)

    def handle(*events: e.Event) -> None:
        for ev in events:
            host.handle(ev)
            clock.advance(60)

    try:
        handle(
            e.CardPresented("s1", "card", "E1", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 1500, 7, sid="s1", card=MC),
            e.ChargerStarted("s1", "st", 0),
            e.MeterValue("s1", "m", 21_000),
            res("topup", Outcome.APPROVED, 1500, 8, sid="s1", for_ref="7"),
            e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=30_000),
            res("capture", Outcome.APPROVED, 1500, 30, sid="s1", for_ref="7"),
            res("capture", Outcome.DECLINED, None, None, sid="s1", for_ref="8"),
            e.OpenPreauthsReported("s1", "q", ("8",)),
        )
        s1 = host.load("s1")
        assert s1 is not None and s1.state is State.CAPTURE_RETRY
        assert host.open_on_terminal("T1") is None
        close_day(host, 1, 1500)
        clock.advance(60)
        handle(
            e.TimerFired("s1", "retry", e.TimerKind.RETRY),
            res("capture", Outcome.APPROVED, 226, 31, sid="s1", for_ref="8"),
        )
        s1 = host.load("s1")
        assert s1 is not None and s1.state is State.COMPLETED and s1.captured_minor == 1726
        handle(
            e.CardPresented("s2", "card", "E1", "T1", "EUR"),
            res("preauthorize", Outcome.APPROVED, 1500, 20, sid="s2", card=MC),
            e.ChargerStarted("s2", "st", 1000),
            e.ChargerStopped(session_id="s2", event_id="sp", meter_wh=3000),
            res("capture", Outcome.UNKNOWN, None, None, sid="s2", for_ref="20"),
            e.OpenPreauthsReported("s2", "q", ()),
        )
        close_day(host, 1, 226)
        s2 = host.load("s2")
        assert s2 is not None and s2.state is State.CAPTURE_FAILED and s2.captured_minor == 0
        now = clock()
        facts = load_facts(store, now - timedelta(days=1), now, now, upstream=False)
    finally:
        store.close()
    kinds = {f.kind for f in reconcile(facts).unexplained}
    assert not kinds & {"missing_in_journal", "missing_in_terminal_totals", "amount_mismatch"}


def _cdr(cdr_id: str, reference: str, before: str) -> Cdr:
    return cdr(cdr_id, before, reference=reference)


def _behind_ten_thousand(store: Store) -> None:
    """The session's first CDR (3.00), then 10,000 later ones of other sessions."""
    first = _cdr("CDR-1", "EVP-s1", "3.00").to_json()
    store.apply(Step("first", inbox=[InboxMessage("m-first", "cpo", "cdr", first)]))
    later = [
        InboxMessage(f"m{n}", "cpo", "cdr", _cdr(f"X-{n}", f"EVP-x{n}", "1.00").to_json())
        for n in range(10_000)
    ]
    store.apply(Step("later", inbox=later))


def test_a_correction_after_a_restart_is_found_behind_ten_thousand_later_cdrs(
    tmp_path: Path,
) -> None:
    """Item 7 on a busy site: the session's first CDR is older than the newest 10,000 stored
    ones. After a restart its correction must still be a correction, not a first CDR (which a
    settled session drops: its energy is billed already)."""
    store = Store.open(tmp_path / "c.sqlite3")
    try:
        _behind_ten_thousand(store)
        link = OcpiChargerLink(
            None, "", "", {"E1": "LOC1"}, ("DE", "EVP"), lambda: datetime.now(UTC), store
        )
        heard: list[ChargerEvent] = []
        link.subscribe(heard.append)
        link.cdr_pushed(_cdr("CDR-2", "EVP-s1", "2.50"))
    finally:
        store.close()
    assert [h.kind for h in heard] == ["price_corrected"]


def test_a_correction_stored_before_a_crash_is_replayed_behind_ten_thousand_cdrs(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "c.sqlite3")
    try:
        store.apply(Step("closed", sessions=[SessionRecord("s1", "completed", {"id": "s1"}, True)]))
        _behind_ten_thousand(store)
        corrected = _cdr("CDR-2", "EVP-s1", "2.50").to_json()
        store.apply(Step("corr", inbox=[InboxMessage("m-corr", "cpo", "cdr", corrected)]))
        link = OcpiChargerLink(
            None, "", "", {"E1": "LOC1"}, ("DE", "EVP"), lambda: datetime.now(UTC), store
        )
        heard: list[ChargerEvent] = []
        link.subscribe(heard.append)
        upstream = UpstreamSettings(
            enabled=True,
            allow_insecure_http=True,
            versions_url="http://127.0.0.1:9/ocpi/versions",
            token_a=SecretRef(value=SecretStr("a")),
            key=SecretRef(value=SecretStr(Fernet.generate_key().decode())),
            listen="127.0.0.1:9",
            public_url="http://127.0.0.1:9/ocpi/versions",
        )
        UpstreamWorker(upstream, "S", store, lambda: datetime.now(UTC), link)._replay_cdrs(link)
    finally:
        store.close()
    ours = [h for h in heard if isinstance(h, PriceCorrection | ChargeStopped)]
    assert [(h.kind, h.session_id) for h in ours if h.session_id == "s1"] == [
        ("price_corrected", "s1")
    ]


async def test_an_end_of_day_waiting_for_the_line_skips_when_a_retried_capture_got_there_first(
    tmp_path: Path,
) -> None:
    """The end of day no longer waits for a capture between its tries. But a retry that fires
    while the end of day waits for the line has a capture sent before the batch closes and
    carried out after it: the end of day must look again once it has the line (skip), or that
    capture is counted in the wrong batch."""
    async with runner_rig(tmp_path, SimConfig(password="123456", card_wait_s=0.05)) as rig:
        runner, _heard = rig.runner()
        async with asyncio.timeout(30):
            await runner.register()
            for ev in (
                e.CardPresented("s1", "card", "E1", "T1", "EUR"),
                res("preauthorize", Outcome.APPROVED, 5000, 7, sid="s1", card=MC),
                e.ChargerStarted("s1", "st", 1000),
                e.ChargerStopped(session_id="s1", event_id="sp", meter_wh=3000),
                res("capture", Outcome.DECLINED, None, None, sid="s1", for_ref="7"),
                e.OpenPreauthsReported("s1", "q", ("7",)),
            ):
                rig.host.handle(ev)
            s1 = rig.host.load("s1")
            assert s1 is not None and s1.state is State.CAPTURE_RETRY
            async with runner._lock:  # the line is busy; the end of day waits for it
                closing = asyncio.create_task(runner.end_of_day())
                await asyncio.sleep(0.05)
                rig.clock.advance(120)
                retried = rig.host.handle(e.TimerFired("s1", "retry", e.TimerKind.RETRY))
                assert [type(x) for x in retried.commands] == [c.Capture]
            assert (await closing).startswith("skipped")
            assert rig.store.last_end_of_day("T1") is None
