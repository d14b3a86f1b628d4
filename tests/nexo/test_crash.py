"""Kill the payment process (SIGKILL) at random moments against a nexo POI; after every life
resolves what the last one left, the POI's ledger and our journal agree: 0 open reservations,
every reservation completed once, booked amount = journalled captures."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.nexo.wire import PATHS, Encoding
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from tests.helpers import subprocess_env
from tests.nexo.conftest import KEY, self_signed
from tests.nexo.crash_worker import journal_lines

KILLS = int(os.environ.get("EVPAY_NEXO_CRASH_KILLS", "12"))  # a longer run: set it higher
SESSIONS = max(6, KILLS)  # more than the first lives finish, so kills land mid-session


@pytest.mark.parametrize("encoding", ["xml", "adyen-json"])
async def test_crash_kills_leave_no_open_hold_and_books_what_the_poi_booked(
    tmp_path: Path, encoding: Encoding
) -> None:
    tls, pin = self_signed(tmp_path) if encoding == "adyen-json" else (None, b"")
    poi = NexoPoi(PoiConfig(encoding=encoding, delay_s=0.03, key=KEY if tls else None))
    runner, port = await serve_nexo_poi(poi, tls=tls)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{PATHS[poi.config.encoding]}"
    state, journal = tmp_path / "state.json", tmp_path / "journal.jsonl"
    cmd = [sys.executable, "-m", "tests.nexo.crash_worker", url, str(state), str(journal)]
    rnd = random.Random(28)
    try:
        for _ in range(KILLS):
            proc = subprocess.Popen([*cmd, str(SESSIONS), pin.hex()], env=subprocess_env())
            await asyncio.sleep(rnd.uniform(0.3, 1.2))  # imports take ~0.3 s; then mid-flight
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
        final = subprocess.Popen([*cmd, str(SESSIONS), pin.hex()], env=subprocess_env())
        assert await asyncio.to_thread(final.wait, 60) == 0
    finally:
        await runner.cleanup()
    entries = journal_lines(journal)
    captures = {e["tid"]: int(e["minor"]) for e in entries if e["type"] == "Completion"}
    reservations = [k for k, t in poi.ledger.items() if t.kind == "reservation"]
    assert poi.open_reservations() == []  # 0 open holds
    states = Counter(poi.ledger[k].state for k in reservations)
    assert states == {"completed": len(reservations)}  # every hold completed, none twice
    assert sorted(captures) == sorted(reservations)  # we know every completion the POI made
    assert poi.booked() == Decimal(sum(captures.values())).scaleb(-2)  # amounts = POI ledger
    assert len(captures) >= SESSIONS
    asked = sum(1 for m in poi.requests if m.header.message_category.value == "TransactionStatus")
    twice = len(entries) - len({(e["type"], e["tid"]) for e in entries})
    print(
        f"nexo crash ({encoding}): {KILLS} kills, {len(reservations)} holds, {asked} status questions, "
        f"booked {poi.booked()} = journal; {twice} results journalled twice (deduplicated)"
    )
