"""Issue 26: an acquirer's refund still ``sent`` after a daemon restart. The engine host on a real
SQLite store and the acquirer runner with its real book (its HTTP side is not needed: the book
is what a restart finds). At the restart the refund is handed to the runner again under the key
it was sent with: a crash between the stored step and the book's record still sends it once,
a refund already in the book is never a second modification, and its webhook — or no webhook
by the deadline (``unknown``, listed) — decides it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from drivers.money import Money
from gateway.acquirer.port import ModificationEvent
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.reconcile import session_facts
from gateway.payments.refunds import RefundStatus
from gateway.payments.session import Session, State
from gateway.runtime.acquirer_runner import AcquirerRunner
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import Clock, card_and_preauth, policy

SID = "s1"
ONLINE = policy(online_deadlines={"T1": timedelta(seconds=60)})
PSP = "8815000000000001"
REF = f"TX.{PSP}@2026-12-07T12:00:00"
DEADLINE = timedelta(seconds=3600)


def webhook(code: str, psp: str, merchant_reference: str, amount: int) -> ModificationEvent:
    return ModificationEvent(
        event=code,
        psp_reference=psp,
        original_reference=PSP,
        merchant_reference=merchant_reference,
        merchant_account="EVPayTest",
        success=True,
        amount=Money(amount, "EUR"),
        reason="",
        event_date="2026-12-07T12:00:00+01:00",
        live=False,
    )


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.store = Store.open(tmp_path / "a.sqlite3", clock=self.clock)
        self.host = EngineHost(self.store, ONLINE, self.clock)
        self.taken: list[e.Event] = []

    def runner(self) -> AcquirerRunner:
        """A new runner (a restart's): nothing remembered but the book."""
        return AcquirerRunner(
            host=self.host,
            routes={"T1": "adyen"},
            acquirers={},
            take=self.taken.append,
            references=lambda _terminal, ref: PSP if ref == REF else None,
        )

    def heard(self) -> Session:
        for event in self.taken:
            self.host.handle(event)
        self.taken.clear()
        s = self.host.load(SID)
        assert s is not None
        return s

    async def completed(self) -> Session:
        """s1 captured at the acquirer (its CAPTURE webhook handed over)."""
        runner = self.runner()
        card_and_preauth(self.host.handle, SID, REF)
        self.host.handle(e.ChargerStarted(SID, "st", 1000))
        stop = e.ChargerStopped(session_id=SID, event_id="stop", meter_wh=5000)
        (capture,) = [x for x in self.host.handle(stop).commands if isinstance(x, c.Capture)]
        await runner.execute(capture)
        self.clock.advance(1)
        self.store.acquirer.received(
            capture.key, "PSPCAPTURE", self.clock(), self.clock() + DEADLINE
        )
        hook = webhook("CAPTURE", "PSPCAPTURE", capture.key, capture.amount_minor)
        self.store.acquirer.record_events("adyen", [hook], self.clock())
        runner.hand_over()
        s = self.heard()
        assert s.state is State.COMPLETED and s.captured_minor
        return s

    def refund_sent(self) -> c.RefundPayment:
        """A refund of 100 stored ``sent``: its command made, then the daemon died."""
        asked = e.RefundRequested(session_id=SID, event_id="r", amount_minor=100, reason="x")
        (cmd,) = [x for x in self.host.handle(asked).commands if isinstance(x, c.RefundPayment)]
        assert cmd.method == "acquirer"
        return cmd

    async def resumed(self, runner: AcquirerRunner, boot: str) -> list[c.RefundPayment]:
        """The worker's start: ``Resumed`` for the session, its commands to the runner."""
        commands = self.host.handle(e.Resumed(SID, f"resume:{boot}")).commands
        again = [x for x in commands if isinstance(x, c.RefundPayment)]
        for cmd in again:
            assert runner.takes(cmd)
            await runner.execute(cmd)
        return again


async def test_a_refund_the_book_never_recorded_is_sent_once_after_the_restart(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    try:
        await rig.completed()
        cmd = rig.refund_sent()  # the crash: stored sent, never in the acquirer's book
        assert rig.store.acquirer.get(cmd.key) is None
        runner = rig.runner()
        (again,) = await rig.resumed(runner, "b2")
        assert again.key == cmd.key  # the same modification, the acquirer's idempotency key
        stored = rig.store.acquirer.get(cmd.key)
        assert stored is not None and stored.status == "queued"
        assert stored.modification.kind == "refund" and stored.modification.amount == Money(
            100, "EUR"
        )
        # sent, taken, then a second restart before its webhook: still one modification
        rig.store.acquirer.received(cmd.key, "PSPREFUND", rig.clock(), rig.clock() + DEADLINE)
        await rig.resumed(rig.runner(), "b3")
        after = rig.store.acquirer.get(cmd.key)
        assert after is not None and after.status == "received" and after.attempts == 1
        hook = webhook("REFUND", "PSPREFUND", cmd.key, 100)
        rig.store.acquirer.record_events("adyen", [hook], rig.clock())
        runner.hand_over()
        s = rig.heard()
        assert s.refunds[0].status is RefundStatus.DONE and s.refunded_minor == 100
        assert not await rig.resumed(rig.runner(), "b4")  # decided: nothing to ask any more
    finally:
        rig.store.close()


async def test_a_refund_without_its_webhook_by_the_deadline_becomes_unknown_after_a_restart(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    try:
        await rig.completed()
        cmd = rig.refund_sent()
        await rig.runner().execute(cmd)  # recorded and taken before the crash
        rig.store.acquirer.received(cmd.key, "PSPREFUND", rig.clock(), rig.clock() + DEADLINE)
        runner = rig.runner()  # the restart
        await rig.resumed(runner, "b2")
        runner.hand_over()
        assert rig.heard().refunds[0].status is RefundStatus.SENT  # not yet overdue
        rig.clock.advance(DEADLINE.total_seconds() + 1)
        runner.hand_over()
        s = rig.heard()
        assert s.refunds[0].status is RefundStatus.UNKNOWN and s.refunded_minor == 0
        row = rig.store.session(SID)
        assert row is not None and session_facts(row).refunds_unsettled == 1
    finally:
        rig.store.close()
