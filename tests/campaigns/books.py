"""The terminals' own books, read the same way for every protocol: the campaigns' end checks
compare the store with these, hold by hold, so a check written once holds for ZVT and nexo.

A ZVT simulator names a hold by its receipt number, which is what the store keeps. A nexo POI
names it by its ``TransactionID``; the driver hands the engine its own reference for it (a
local number mapped in its state file, or the POI transaction as ``TransactionID@TimeStamp``)
and lists it in its state file (``handles``), where closed entries are dropped after a while
(``drivers.nexo.asyncio.client.MAX_HANDLES``). ``NexoBook`` therefore reads that file
after every life of the daemon and remembers every mapping it saw, so the end check can name
each POI transaction as the store does, however long the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drivers.sim.nexo_poi import NexoPoi
from drivers.sim.terminal import SimTerminal, Transaction

State = Literal["open", "booked", "released"]


@dataclass(frozen=True, slots=True)
class BookedHold:
    """One hold as the terminal recorded it, named as the store names it (``ref``)."""

    terminal: str
    ref: str
    state: State
    amount: int  # what the terminal holds (or held), minor units
    booked: int  # what the terminal booked of it (0 unless ``booked``)


def stored_ref(hold: dict[str, Any]) -> str:
    """A stored hold's reference as text (an int receipt number before references were text)."""
    return str(hold["ref"] if "ref" in hold else hold["receipt_no"])


def zvt_book(
    terminal: str, sim: SimTerminal, closed: Iterable[Transaction] = ()
) -> list[BookedHold]:
    """The holds of the terminal's closed batches (``closed``, kept by the campaign as each end
    of day forgets them) and of its open one."""
    states: dict[str, State] = {"open": "open", "booked": "booked"}
    return [
        BookedHold(terminal, str(t.receipt), states.get(t.state, "released"), t.amount, t.booked)
        for t in (*closed, *sim.state.transactions.values())
        if t.kind == "preauth"
    ]


def _minor(amount: Any) -> int:
    return int(amount.scaleb(2))


@dataclass
class NexoBook:
    """A nexo POI's ledger, its reservations named by the driver's references."""

    terminal: str
    poi: NexoPoi
    driver_state: Path  # the driver's state file (beside the daemon's store)
    names: dict[str, str] = field(default_factory=dict)  # POI TransactionID -> our reference

    def learn(self) -> None:
        """Remember the driver's current handle → TransactionID mappings (call after each life:
        the file is rewritten atomically, so a read never sees half of it)."""
        try:
            data = json.loads(self.driver_state.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return
        for ref, entry in data.get("handles", {}).items():
            if ref != "next" and entry.get("id"):  # a local number standing for the transaction
                self.names.setdefault(str(entry["id"]), ref)
            elif "@" in ref:  # the reference is the POI transaction, TransactionID@TimeStamp
                self.names.setdefault(ref.rpartition("@")[0], ref)

    def holds(self) -> list[BookedHold]:
        self.learn()
        states: dict[str, State] = {"open": "open", "completed": "booked"}
        return [
            BookedHold(
                self.terminal,
                self.names.get(tid, tid),  # a driver that names holds by TransactionID: itself
                states.get(t.state, "released"),
                _minor(t.amount),
                _minor(t.booked) if t.state == "completed" else 0,
            )
            for tid, t in self.poi.ledger.items()
            if t.kind == "reservation"
        ]

    def other_money(self) -> list[str]:
        """Sales and refunds the POI booked: the EV flows never make them."""
        return [
            f"{self.terminal} {t.kind} {tid} {t.amount}"
            for tid, t in self.poi.ledger.items()
            if t.kind != "reservation" and t.state == "done"
        ]
