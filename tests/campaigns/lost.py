"""Lost results: the terminal's answer lost at each point of pre-auth, capture and release.

The engine and the store are the real ones (``EngineHost`` on a SQLite file); the terminal is
the simulation's book-keeping terminal (``tests/payments/test_simulation.py``), and the world
around them is that simulation's: chargers, drivers, redeliveries and gateway crashes. Here
each session's first answer of each kind of operation may be lost (``CHANCE``), at a point
drawn at random:

- ``before``: the request never reached the terminal (it did nothing);
- ``after``: the terminal did it (a hold made, a capture or a release booked), and the answer
  never came back.

The gateway cannot tell the two apart; it must ask the terminal (its open pre-authorisations,
its last result) and act on what it hears: every session ends final, no hold is booked twice,
nothing is booked without the terminal's evidence, every hold is captured, released or owed
(the simulation's ``final_checks``). Figures: the losses forced, per kind and point.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from drivers.base import Outcome
from gateway.payments import commands as c
from tests.campaigns import scan
from tests.payments.test_simulation import FakeTerminal, Simulation

KINDS = {c.Preauthorize: "preauthorize", c.Capture: "capture", c.Release: "release"}
# How often a session's first answer of a kind is lost: a lost pre-auth ends the session before
# any capture (the gateway releases what it cannot attribute), so it is lost less often.
CHANCE = {"preauthorize": 0.25, "capture": 0.7, "release": 0.7}
# (sessions, runs): each session may lose one answer of each kind. The full size is many runs
# on fresh stores: the simulation's sweeps reload every owing session, so one long run slows
# down as its store grows (10,000 sessions in one run took 23 minutes).
SIZES = {"small": (500, 1), "medium": (5_000, 1), "full": (1_000, 60)}


class _Approves(random.Random):
    """What the book-keeping terminal draws when an answer is to be lost after it acted: the
    operation goes through (no decline, no busy, no loss of its own)."""

    def random(self) -> float:
        return 0.999


@dataclass
class LosingTerminal(FakeTerminal):
    losses: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lost: set[tuple[str, str]] = field(default_factory=set)  # (session, kind) already lost once

    def run(self, cmd: c.Command, card: dict[str, str]) -> tuple[Outcome, int | None, str | None]:
        kind = KINDS.get(type(cmd))
        key = (getattr(cmd, "session_id", ""), kind or "")
        if kind is None or key in self._lost:
            return super().run(cmd, card)
        self._lost.add(key)
        if self.rng.random() >= CHANCE[kind]:
            return super().run(cmd, card)
        point = self.rng.choice(("before", "after"))
        self.losses[(kind, point)] += 1
        if point == "after":
            drawing, self.rng = self.rng, _Approves()
            try:
                super().run(cmd, card)  # the terminal acts, in its own books
            finally:
                self.rng = drawing
        return Outcome.UNKNOWN, None, None


@dataclass
class Figures:
    sessions: int
    losses: Counter[tuple[str, str]]
    completed: int
    seconds: float


def run(size: str, seed: int) -> Figures:
    started = time.perf_counter()
    per_run, runs = SIZES[size]
    losses: Counter[tuple[str, str]] = Counter()
    completed = 0
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="lost-") as tmp:
            sim = Simulation(seed + 1_000 * i, Path(tmp) / "lost.sqlite3", "fixed", per_run)
            sim.terminal = LosingTerminal(
                random.Random(seed + 1_000 * i + 1),
                sim.clock,
                sim.policy.validity,
                sim.terminal.echo,
            )
            sim.run()  # raises AssertionError, naming the session, on any broken invariant
            completed += sum(s.state.value == "completed" for s in sim.all_sessions())
            losses += sim.terminal.losses
            sim.store.close()
            hits = scan.scan_paths([Path(tmp) / "lost.sqlite3"])
            assert not hits, f"card data in the store: {hits[:3]}"
    return Figures(per_run * runs, losses, completed, time.perf_counter() - started)


def describe(f: Figures) -> str:
    per_kind = ", ".join(
        f"{k} {sum(n for (kind, _), n in f.losses.items() if kind == k)}"
        f" ({f.losses[(k, 'before')]} before, {f.losses[(k, 'after')]} after)"
        for k in KINDS.values()
    )
    return f"{f.sessions} sessions ({f.completed} completed) in {f.seconds:.0f} s; answers lost: {per_kind}"
