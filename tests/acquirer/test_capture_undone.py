"""CAPTURE_FAILED after a booked CAPTURE (Adyen documents that it can follow): the booking is
undone, the amount owed, the journal says so and the CPO gets a corrected FAC (issue 29). The
engine's decision (pure), then the runner with a real store: once, and a clean restart logs
no contradiction."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.money import Money
from gateway.acquirer.port import ModificationEvent
from gateway.ocpi.fac import fac_from_outcome
from gateway.ocpi.models import CaptureStatusCode
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.model import HoldStatus
from gateway.payments.session import State, transition, violations
from gateway.runtime.acquirer_runner import AcquirerRunner
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import T0, Clock, card_and_preauth, policy
from tests.payments.test_session import completed

SID = "s1"
ONLINE = policy(online_deadlines={"T1": timedelta(seconds=60)})
PSP = "8815000000000001"
REF = f"TX.{PSP}@2026-12-07T12:00:00"


def test_a_capture_failed_after_the_booked_capture_undoes_it_and_corrects_the_fac() -> None:
    done = completed()
    hold = done.holds[0]
    captured = done.captured_minor
    assert captured > 0 and hold.status is HoldStatus.CAPTURED
    undo = e.CaptureUndone(session_id=SID, event_id="u", ref=hold.ref, detail="CAPTURE_FAILED")
    t = transition(done, undo, T0 + timedelta(hours=2), policy())
    s = t.session
    assert s is not None and s.state is State.CAPTURE_FAILED, s and s.notes
    assert s.captured_minor == 0 and s.bill.owed_minor == captured + done.bill.owed_minor
    assert s.holds[0].status is HoldStatus.LAPSED and not violations(s)
    assert any("undone" in d for d in s.discrepancies)
    (sent,) = [x for x in t.commands if isinstance(x, c.Enqueue)]
    fac = fac_from_outcome(sent.payload, T0)
    assert fac is not None and fac.id == f"{SID}-C"
    assert fac.authorization_reference == done.reference
    assert fac.capture_status_code is CaptureStatusCode.FAILED
    assert f"correction of FAC {SID}" in (fac.capture_status_message or "")
    again = transition(s, undo, T0 + timedelta(hours=3), policy())
    assert again.session == s and not again.commands  # a repeat changes nothing


def event(code: str, amount: int, *, success: bool = True) -> ModificationEvent:
    return ModificationEvent(
        event=code,
        psp_reference="8816000000000777",
        original_reference=PSP,
        merchant_reference=f"{SID}:capture:{REF}",
        merchant_account="EVPayTest",
        success=success,
        amount=Money(amount, "EUR"),
        reason="" if success else "Capture failed",
        event_date="2026-12-07T12:00:00+01:00",
        live=False,
    )


async def test_the_runner_undoes_it_once_and_a_restart_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "u.sqlite3", clock=clock)
    host = EngineHost(store, ONLINE, clock)
    taken: list[e.Event] = []

    def runner() -> AcquirerRunner:
        return AcquirerRunner(
            host=host,
            routes={"T1": "adyen"},
            acquirers={},
            take=taken.append,
            references=lambda _terminal, ref: PSP if ref == REF else None,
        )

    first = runner()
    card_and_preauth(host.handle, SID, REF)
    host.handle(e.ChargerStarted(SID, "st", 1000))
    stopped = host.handle(e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=5000))
    (capture,) = [x for x in stopped.commands if isinstance(x, c.Capture)]
    await first.execute(capture)
    clock.advance(1)
    store.acquirer.received(capture.key, "8816000000000777", clock(), clock() + timedelta(60))
    store.acquirer.record_events("adyen", [event("CAPTURE", capture.amount_minor)], clock())
    first.hand_over()
    for x in taken:
        host.handle(x)
    taken.clear()
    s = host.load(SID)
    assert s is not None and s.state is State.COMPLETED, s and s.notes
    clock.advance(60)
    failed = event("CAPTURE_FAILED", capture.amount_minor, success=False)
    store.acquirer.record_events("adyen", [failed], clock())
    with caplog.at_level(logging.WARNING):
        first.hand_over()
    (undo,) = taken
    assert isinstance(undo, e.CaptureUndone) and undo.ref == REF
    assert host.handle(undo).applied
    s = host.load(SID)
    assert s is not None and s.state is State.CAPTURE_FAILED and s.captured_minor == 0
    assert s.bill.owed_minor == capture.amount_minor
    journal = [j for j in store.journal(limit=1000) if j["kind"] == "CaptureUndone"]
    assert journal, "the journal records the undoing"
    outbox = [m.message_id for m in store.outbox.list(kind="session.outcome")]
    assert f"{SID}:outcome" in outbox and f"{SID}:undone:{REF}" in outbox
    assert [r.getMessage() for r in caplog.records].count("acquirer.capture_undone") == 1
    # a restart offers the settled outcomes again: nothing new, nothing logged
    taken.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        runner().hand_over()
    assert not taken
    said = [r.getMessage() for r in caplog.records]
    assert "acquirer.contradicted" not in said and "acquirer.capture_undone" not in said
    store.close()
