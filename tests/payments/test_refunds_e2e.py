"""End of day and refunds against the simulator terminal, as a site runs them: the daemon's
scheduled end of day skips while a transaction is open and runs once it is closed; a
technician's refund is a reversal while the day is open and a refund after it; the same
request twice is one refund; more than was captured is refused; the CPO hears of each."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.runtime.charger import EvsePlan
from tests.helpers import EVPAY, subprocess_env
from tests.site_rig import Site


async def evpay(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The technician's CLI, in a thread: the daemon under test runs on this event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [*EVPAY, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )


async def charge(s: Site, energy_wh: int = 10_000, interval: float = 0.02) -> dict[str, Any]:
    known = {r["id"] for r in s.daemon.store.sessions()}
    s.charger.plug_in("E1", EvsePlan(energy_wh=energy_wh, step_wh=1_000, meter_interval_s=interval))
    await s.until(
        lambda: [r for r in s.daemon.store.sessions() if r["id"] not in known and r["final"]], 60
    )
    (row,) = [r for r in s.daemon.store.sessions() if r["id"] not in known]
    return row


async def test_end_of_day_waits_for_the_open_transaction_then_closes_the_batch(
    start_site: Callable[..., Any],
) -> None:
    at = (datetime.now(ZoneInfo("Europe/Zagreb")) + timedelta(seconds=8)).strftime("%H:%M:%S")
    s: Site = await start_site(
        "DE", terminal=f'end_of_day = "{at}"', extra="[daemon]\nend_of_day_retry_s = 0.5"
    )
    first = await charge(s)
    known = {r["id"] for r in s.daemon.store.sessions()}
    s.charger.plug_in(
        "E1", EvsePlan(energy_wh=6_000, step_wh=1_000, meter_interval_s=1.5)
    )  # open at the hour
    await s.until(lambda: s.daemon.store.last_end_of_day("t1") is not None, 40)
    (second,) = [r for r in s.daemon.store.sessions() if r["id"] not in known]
    assert second["final"]  # the batch closed only after the open transaction had
    skipped = [j for j in s.daemon.store.journal("t1") if j["kind"] == "end_of_day.skipped"]
    assert skipped and skipped[0]["data"]["open_session"] == second["id"]
    (batch,) = s.daemon.store.end_of_day_batches(
        datetime.now(ZoneInfo("UTC")) - timedelta(hours=1),
        datetime.now(ZoneInfo("UTC")) + timedelta(hours=1),
    )
    captured = first["data"]["captured_minor"] + second["data"]["captured_minor"]
    assert batch["totals"] == [
        {"amount_minor": captured, "brand": "mastercard", "count": 2, "currency": "EUR"}
    ]
    assert batch["total_minor"] == captured and batch["batch_range"] is not None


async def test_refunds_before_and_after_end_of_day(
    start_site: Callable[..., Any], tmp_path: Path
) -> None:
    # a refund after the end of day is card-present (06 31) only where the site allows it
    s: Site = await start_site("DE", terminal="card_present_refunds = true")
    config = tmp_path / "DE.toml"
    row = await charge(s)
    sid, captured = row["id"], row["data"]["captured_minor"]
    assert captured == 500  # 10 kWh at 0.40 + 25 %

    too_much = await evpay(
        config, "sessions", "refund", sid, "--amount", "5.01", "--reason", "goodwill"
    )
    assert too_much.returncode == 2 and "more than the 5.00 EUR captured" in too_much.stderr

    full = await evpay(
        config,
        "sessions",
        "refund",
        sid,
        "--amount",
        "5.00",
        "--reason",
        "charger fault",
        "--wait",
        "20",
    )
    assert full.returncode == 0 and "status done" in full.stdout, full.stdout + full.stderr
    again = await evpay(
        config, "sessions", "refund", sid, "--amount", "5.00", "--reason", "charger fault"
    )
    assert "already requested" in again.stdout
    reversed_ = [t for t in s.sim.state.transactions.values() if t.kind == "reversal"]
    assert (
        len(reversed_) == 1 and reversed_[0].amount == 500
    )  # 06 30 on the capture: the day was open
    assert not [t for t in s.sim.state.transactions.values() if t.kind == "refund"]

    second = await charge(s)
    engine = s.daemon.engine
    assert engine is not None and await engine.end_of_day("t1") == "done"
    partial = await evpay(
        config,
        "sessions",
        "refund",
        second["id"],
        "--amount",
        "1.50",
        "--reason",
        "slow charge",
        "--wait",
        "20",
    )
    assert partial.returncode == 0 and "status done" in partial.stdout, (
        partial.stdout + partial.stderr
    )
    refunds = [t for t in s.sim.state.transactions.values() if t.kind == "refund"]
    assert [t.amount for t in refunds] == [150]  # 06 31 after the end of day
    refunded = s.daemon.store.session(second["id"])
    assert refunded is not None
    data = refunded["data"]
    assert data["refunded_minor"] == 150 and data["refunds"][0]["method"] == "refund"
    shown = await evpay(config, "sessions", "show", second["id"])
    assert "refund" in shown.stdout and "slow charge" in shown.stdout
    await s.until(lambda: len(s.cpo.state.refunds) == 2, 15)  # the CPO hears of each, once
    amounts = sorted(r[0]["amount_minor"] for r in s.cpo.state.refunds.values())
    assert amounts == [150, 500] and all(len(r) == 1 for r in s.cpo.state.refunds.values())
    await asyncio.sleep(0.5)
    assert (
        len([t for t in s.sim.state.transactions.values() if t.kind == "refund"]) == 1
    )  # (the batch was cleared)
