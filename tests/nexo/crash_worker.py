"""One life of a payment process on a nexo POI, for the crash test (killed with SIGKILL).

It does what the engine will: first resolve what the last life left in doubt (TransactionStatus
via ``last_result``), capture any reservation it holds, then run sessions (reserve 10.00,
capture 3.00). Every approved result is journalled (fsync) by the persist hook *before* the
driver forgets the ServiceID.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from drivers.base import Outcome, TerminalResult
from drivers.money import Money
from drivers.nexo.asyncio.client import NexoOptions
from drivers.nexo.asyncio.terminal import NexoTerminal
from tests.nexo.conftest import KEY

EUR = "EUR"


def journal_lines(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def life(url: str, state: Path, journal: Path, sessions: int, pin: str = "") -> None:
    adyen = url.startswith("https://")
    options = NexoOptions(
        url=url,
        encoding="adyen-json" if adyen else "xml",
        poi_id="POI-SIM-1",
        key=KEY if adyen else None,
        pinned_sha256=bytes.fromhex(pin) if pin else None,
        state_path=state,
        retry_s=0.05,
        timeout_s=5,
    )
    term = NexoTerminal("crash", options)

    async def record(result: TerminalResult) -> None:
        if result.approved:
            entry = {
                "type": result.details.get("payment_type", ""),
                "tid": result.details.get("poi_transaction_id", ""),
                "minor": str(result.amount.minor if result.amount else 0),
            }
            with journal.open("a") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())

    while (await term.last_result(persist=record)).outcome is Outcome.UNKNOWN:
        await asyncio.sleep(0.05)
    for key, entry in list(term.client.handles.items()):
        if entry.get("state") == "open":
            await term.capture(key, Money(1000, EUR), Money(100, EUR), "recovered", persist=record)
    while len({j["tid"] for j in journal_lines(journal) if j["type"] == "Completion"}) < sessions:
        pa = await term.preauthorize(Money(1000, EUR), "s", persist=record)
        if pa.approved and pa.ref is not None:
            await term.capture(pa.ref, Money(1000, EUR), Money(300, EUR), "s", persist=record)
    await term.close()


if __name__ == "__main__":
    pin = sys.argv[5] if len(sys.argv) > 5 else ""
    asyncio.run(life(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), pin))
