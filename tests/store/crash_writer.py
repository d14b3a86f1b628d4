"""Subprocess for the crash test: applies numbered steps forever until killed."""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.store import JournalEntry, OutboxMessage, PaymentRecord, SessionRecord, Step, Store


def main() -> None:
    store = Store.open(Path(sys.argv[1]))
    n = 0
    while True:
        sid = f"s{n % 50}"
        store.apply(
            Step(
                key=f"step-{n}",
                sessions=[SessionRecord(sid, f"state-{n}", {"n": n})],
                payments=[PaymentRecord(f"p{n}", sid, "capture", "done", n, "EUR")],
                journal=[JournalEntry("session", sid, f"e{n}.{i}", {"n": n}) for i in range(3)],
                outbox=[
                    OutboxMessage(f"m{n}.{i}", f"fac:{sid}", "fac.post", {"n": n}) for i in range(2)
                ],
            )
        )
        if n == 20:
            print("running", flush=True)
        n += 1


if __name__ == "__main__":
    main()
