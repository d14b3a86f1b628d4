"""Modifications against the simulated Adyen on real loopback HTTP, settled by its signed
webhooks through our receiver into a real SQLite store: every simulator variant."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.money import Money
from gateway.acquirer.port import Modification
from gateway.errors import AcquirerUnreachable
from tests.acquirer.rig import API_KEY, DEADLINE, rig

EUR = "EUR"


def capture(
    key: str = "s1/capture", amount: int = 3150, payment: str = "8800000000000042"
) -> Modification:
    return Modification(
        key, "capture", payment, amount=Money(amount, EUR), authorised=Money(5000, EUR)
    )


async def test_capture_is_received_then_confirmed_only_by_its_webhook(tmp_path: Path) -> None:
    async with rig(tmp_path, {"slow"}) as r:
        assert r.forwarder.submit(capture())
        assert r.status("s1/capture") == "queued"
        drained = await r.forwarder.drain()
        assert (drained.received, drained.waiting) == (1, 0)
        assert r.status("s1/capture") == "received"  # "received" is not an outcome
        await r.sim.settle()
        assert r.status("s1/capture") == "confirmed"
        (note,) = r.store.acquirer.notifications("adyen")
        assert note["event_code"] == "CAPTURE" and note["command_key"] == "s1/capture"
        assert len(r.sim.state.applied) == 1


async def test_a_repeated_submit_is_the_same_modification(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert r.forwarder.submit(capture())
        assert not r.forwarder.submit(capture())
        await r.forwarder.drain()
        await r.forwarder.drain()
        await r.sim.settle()
        assert len(r.sim.state.applied) == 1


async def test_lost_webhook_is_an_overdue_finding_never_a_success(tmp_path: Path) -> None:
    async with rig(tmp_path, {"lost"}) as r:
        r.forwarder.submit(capture())
        await r.forwarder.drain()
        await r.sim.settle()
        assert r.store.acquirer.overdue(r.clock()) == []
        r.clock.now += DEADLINE + timedelta(seconds=1)
        (late,) = r.store.acquirer.overdue(r.clock())
        assert late.modification.command_key == "s1/capture" and late.status == "received"
        assert [w.modification.command_key for w in r.store.acquirer.waiting()] == ["s1/capture"]


async def test_slow_webhook_after_the_deadline_still_settles(tmp_path: Path) -> None:
    async with rig(tmp_path, {"slow"}) as r:
        r.forwarder.submit(capture())
        await r.forwarder.drain()
        r.clock.now += DEADLINE + timedelta(seconds=1)
        assert len(r.store.acquirer.overdue(r.clock())) == 1
        await r.sim.settle()
        assert r.status("s1/capture") == "confirmed"
        assert r.store.acquirer.overdue(r.clock()) == []


async def test_duplicated_webhooks_are_stored_and_applied_once(tmp_path: Path) -> None:
    async with rig(tmp_path, {"duplicate"}) as r:
        r.forwarder.submit(capture())
        await r.forwarder.drain()
        await r.sim.settle()
        assert r.sim.state.webhooks_sent == 2  # both were [accepted]
        (note,) = r.store.acquirer.notifications("adyen")
        assert note["repeats"] == 1
        assert r.status("s1/capture") == "confirmed"


@pytest.mark.parametrize("variants", [{"capture_failed"}, {"capture_failed", "reorder"}])
async def test_capture_failed_after_received_is_a_failure_in_any_order(
    tmp_path: Path, variants: set[str]
) -> None:
    async with rig(tmp_path, variants) as r:
        r.forwarder.submit(capture())
        await r.forwarder.drain()
        await r.sim.settle()
        assert r.status("s1/capture") == "failed"
        codes = [str(n["event_code"]) for n in r.store.acquirer.notifications("adyen")]
        assert sorted(codes) == ["CAPTURE", "CAPTURE_FAILED"]


async def test_adjustment_declined_is_a_failure(tmp_path: Path) -> None:
    async with rig(tmp_path, {"adjustment_declined"}) as r:
        r.forwarder.submit(
            Modification(
                "s1/adjust-1", "amount_update", "8800000000000042", amount=Money(9000, EUR)
            )
        )
        await r.forwarder.drain()
        await r.sim.settle()
        stored = r.store.acquirer.get("s1/adjust-1")
        assert stored is not None and stored.status == "failed"
        assert stored.outcome_reason == "Refused"


async def test_lost_response_then_retry_modifies_once(tmp_path: Path) -> None:
    async with rig(tmp_path, {"response_lost", "slow"}) as r:
        r.forwarder.submit(capture())
        with pytest.raises(AcquirerUnreachable) as lost:
            await r.acquirer.send(capture())
        assert lost.value.ambiguous
        drained = await r.forwarder.drain()  # the retry: same key, same Idempotency-Key
        assert drained.received == 1
        assert len(r.sim.state.applied) == 1
        stored = r.store.acquirer.get("s1/capture")
        assert stored is not None
        assert stored.acquirer_reference == r.sim.state.applied[0]["pspReference"]
        await r.sim.settle()
        assert r.status("s1/capture") == "confirmed"


async def test_lost_response_in_the_drain_stays_queued_then_drains_once(tmp_path: Path) -> None:
    async with rig(tmp_path, {"response_lost", "lost"}) as r:
        r.forwarder.submit(capture())
        first = await r.forwarder.drain()
        assert first.waiting == 1 and r.status("s1/capture") == "queued"
        stored = r.store.acquirer.get("s1/capture")
        assert stored is not None and stored.attempts == 1 and stored.last_error
        second = await r.forwarder.drain()
        assert second.received == 1 and len(r.sim.state.applied) == 1


async def test_uplink_down_modifications_wait_then_drain_once_in_order(tmp_path: Path) -> None:
    async with rig(tmp_path, start_sim=False) as r:
        r.forwarder.submit(capture("s1/capture"))
        r.forwarder.submit(
            Modification("s2/refund", "refund", "8815000000000009", amount=Money(200, EUR))
        )
        down = await r.forwarder.drain()
        assert (down.received, down.waiting) == (0, 2)
        assert [w.status for w in r.store.acquirer.waiting()] == ["queued", "queued"]
        await r.sim.start("127.0.0.1", r.sim_port)
        up = await r.forwarder.drain()
        assert up.received == 2
        assert (await r.forwarder.drain()).received == 0
        assert [a["what"] for a in r.sim.state.applied] == ["captures", "refunds"]
        await r.sim.settle()
        assert r.status("s1/capture") == r.status("s2/refund") == "confirmed"


async def test_a_refusal_is_final_and_visible(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.sim.state.authorised["8800000000000042"] = 1000  # Adyen knows less than we do
        r.forwarder.submit(capture(amount=3000))
        drained = await r.forwarder.drain()
        assert drained.rejected == 1
        stored = r.store.acquirer.get("s1/capture")
        assert stored is not None and stored.status == "rejected"
        assert "Invalid amount" in (stored.outcome_reason or "")
        assert r.sim.state.applied == []


async def test_cancel_by_merchant_reference_and_cancel_settle(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.forwarder.submit(
            Modification("s3/cancel", "cancel_by_reference", merchant_reference="session-3")
        )
        r.forwarder.submit(Modification("s4/cancel", "cancel", "8800000000000077"))
        assert (await r.forwarder.drain()).received == 2
        await r.sim.settle()
        assert r.status("s3/cancel") == r.status("s4/cancel") == "confirmed"
        codes = {n["command_key"]: n["event_code"] for n in r.store.acquirer.notifications("adyen")}
        assert codes == {"s3/cancel": "TECHNICAL_CANCEL", "s4/cancel": "CANCELLATION"}


async def test_a_wrong_api_key_keeps_it_queued_and_the_key_is_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with rig(tmp_path) as r:
        r.sim.state.api_key = "another"
        r.forwarder.submit(capture())
        assert (await r.forwarder.drain()).waiting == 1  # our fault, not a verdict: kept
        stored = r.store.acquirer.get("s1/capture")
        assert stored is not None and stored.status == "queued"
        assert "check the API key" in (stored.last_error or "")
        assert API_KEY not in (stored.last_error or "")
        r.sim.state.api_key = API_KEY  # the key is mended: the same modification goes, once
        assert (await r.forwarder.drain()).received == 1
        assert len(r.sim.state.applied) == 1
    assert "acquirer.unreachable" in caplog.text and API_KEY not in caplog.text
