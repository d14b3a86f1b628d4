"""The crash campaign's nights (nights.py): when a terminal's night begins and ends, and the config
a daemon starting in it is given: the terminal's daily end of day a few seconds on, which the
site's settings accept and the engine schedules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drivers.sim.pt_state import Transaction
from gateway.runtime.engine_setup import build_policy
from gateway.runtime.terminal_runner import next_local
from gateway.settings import load_settings
from tests.campaigns import nights as n
from tests.campaigns.nights import Nights
from tests.site_rig import site_toml


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_night_closes_the_terminals_batch_through_the_daemons_own_end_of_day(
    tmp_path: Path,
) -> None:
    nights = Nights(every=3)
    base = site_toml(
        tmp_path / "evpay.sqlite3",
        {"t1": "tcp://127.0.0.1:1", "t2": "tcp://127.0.0.1:2"},
        evses={"E1": "t1", "E2": "t2"},
    )
    for _ in range(2):
        nights.plugged_in("t1")
    assert not nights.dark  # day: no end of day is scheduled
    settings = load_settings(_config(tmp_path, nights.config(base)))
    assert [t.end_of_day for t in settings.terminals] == [None, None]
    assert settings.daemon.end_of_day_retry_s == n.RETRY_S

    nights.plugged_in("t1")  # the third EV: night at t1, not at t2
    assert set(nights.dark) == {"t1"}
    before = datetime.now(UTC)
    text = nights.config(nights.config(base))  # rewritten at every start: one end of day each
    settings = load_settings(_config(tmp_path, text))
    at = {t.id: t.end_of_day for t in settings.terminals}
    assert at["t2"] is None and at["t1"] is not None
    due = next_local(before.astimezone(build_policy(settings).tz), at["t1"])
    assert timedelta(0) < due - before <= timedelta(seconds=n.LEAD_S + 1)  # today, seconds on

    batch = [Transaction(1, 1, "preauth", 5000, "booked", 1234)]
    nights.on_end_of_day("t1")(batch)  # the simulator closed the batch: day again
    assert not nights.dark and nights.closed == {"t1": batch} and nights.batches["t1"] == 1
    assert nights.plugged["t1"] == 0
    assert "end_of_day =" not in nights.config(text)


async def test_a_night_that_does_not_close_its_batch_ends_all_the_same() -> None:
    nights = Nights(every=1)
    nights.plugged_in("t2")
    nights.dark["t2"] -= n.NIGHT_MAX_S + 1  # began long ago
    stopping = asyncio.Event()
    async with asyncio.timeout(5):
        await nights.morning("t2", stopping)
    assert not nights.dark and nights.missed == 1


def test_no_nights_no_end_of_day() -> None:
    nights = Nights(every=0)
    for _ in range(1000):
        nights.plugged_in("t1")
    text = '[[terminals]]\nid = "t1"\ndevice = "x"\n'
    assert not nights.dark and nights.config(text) == text
