"""Lost results on nexo: the POI's answers lost before and after it acted, resolved by asking.

``python -m tests.campaigns lost-results --protocol nexo [--encoding xml|adyen-json]``

The real driver (``NexoTerminal``) against the nexo POI simulator on loopback HTTP (XML) or
HTTPS (Adyen JSON, encrypted, certificate pinned). Each session makes a reservation and then
completes part of it or reverses it; each of those money commands may lose its answer
(``CHANCE``), at a point drawn at random:

- ``before``: the connection is cut before the POI acts (it did nothing; TransactionStatus
  answers NotFound);
- ``after``: the POI acts, then the connection is cut (TransactionStatus repeats its answer);
- either of them with the POI answering TransactionStatus "InProgress" a few times first, and
  sometimes more times than one call asks: the driver returns UNKNOWN, the gateway "restarts"
  (a new driver from the same state file) and asks again (``last_result``).

What the campaign checks is what the engine relies on: a result is stored (the persist hook's
journal) before its ServiceID is forgotten; every command reached the POI once (a lost one is
resolved by TransactionStatus, never repeated blindly; a command the POI says never took
effect is sent again, which is a new command); at the end no reservation is open, none was
completed twice, and what the journal captured equals what the POI booked, reservation by
reservation. The engine's own handling of UNKNOWN results is the ZVT lost-results campaign's
(``lost.py``, the engine and store against a book-keeping terminal); this one is the nexo
driver's half of it, on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from drivers.base import Outcome, TerminalResult
from drivers.money import Money
from drivers.nexo import messages as nm
from drivers.nexo.asyncio.client import MAX_RECOVERY_ROUNDS, NexoOptions
from drivers.nexo.asyncio.terminal import NexoTerminal
from drivers.nexo.wire import PATHS, Encoding
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from tests.nexo.conftest import KEY, self_signed

CHANCE = 0.5  # a money command's answer is lost this often
SIZES = {"small": 40, "medium": 400, "full": 2_000}  # sessions
MAX_ASKS = 50  # last_result calls for one UNKNOWN before the campaign calls it a violation
MAX_SENDS = 20  # a command sent again after "never took effect" (each loss at CHANCE / 2)


@dataclass
class Figures:
    sessions: int = 0
    completed: int = 0
    reversed: int = 0
    losses: Counter[tuple[str, str]] = field(default_factory=Counter)  # (command, point)
    restarts: int = 0
    status_questions: int = 0
    resent_after_not_found: int = 0
    booked: Decimal = Decimal(0)
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)


class LostNexo:
    def __init__(self, workdir: Path, seed: int, sessions: int, encoding: Encoding) -> None:
        self.dir, self.rng, self.sessions, self.encoding = (
            workdir,
            random.Random(seed),
            sessions,
            encoding,
        )
        self.figures = Figures()
        self.journal: list[TerminalResult] = []  # what the "store" holds, in order
        self.commands = 0  # money commands the campaign issued (each must reach the POI once)
        self.dropped = 0  # of those, cut before the POI saw them (not in its request list)

    async def persist(self, result: TerminalResult) -> None:
        sid = result.details.get("service_id")
        answered = "result" in result.details  # the POI's answer (NotFound: nothing to keep)
        if sid and answered and sid not in self._in_flight():
            self.figures.violations.append(
                f"{result.operation} {result.outcome} ({result.message}): ServiceID {sid} "
                "forgotten first"
            )
        self.journal.append(result)

    def _in_flight(self) -> set[str]:
        """The ServiceIDs a restart would ask about (answered or resolved, not yet forgotten)."""
        return {str(f["service_id"]) for f in self.term.client.tracker.snapshot()["in_flight"]}

    def _driver(self) -> NexoTerminal:
        return NexoTerminal("n1", self.options)

    async def run(self) -> Figures:
        started = time.perf_counter()
        tls, pin = self_signed(self.dir) if self.encoding == "adyen-json" else (None, None)
        self.poi = NexoPoi(PoiConfig(encoding=self.encoding, key=KEY if tls else None))
        runner, port = await serve_nexo_poi(self.poi, tls=tls)
        self.options = NexoOptions(
            url=f"{'https' if tls else 'http'}://127.0.0.1:{port}{PATHS[self.encoding]}",
            encoding=self.encoding,
            sale_id="EVPAY-LOST",
            poi_id=self.poi.config.poi_id,
            key=KEY if tls else None,
            pinned_sha256=pin,
            timeout_s=5.0,
            quick_timeout_s=5.0,
            retry_s=0.005,
            state_path=self.dir / "nexo-n1.json",
        )
        self.term = self._driver()
        try:
            for i in range(self.sessions):
                await self.session(i)
        finally:
            await self.term.close()
            await runner.cleanup()
        self.check()
        self.figures.seconds = time.perf_counter() - started
        return self.figures

    def arm(self, command: str) -> None:
        if self.rng.random() >= CHANCE:
            return
        point = self.rng.choice(("before", "after"))
        self.figures.losses[(command, point)] += 1
        if point == "before":
            self.poi.config.drop_requests = 1
            self.dropped += 1
        else:
            self.poi.config.lose_answers = 1
        if self.rng.random() < 0.3:  # "InProgress" first; sometimes longer than one call asks
            self.poi.config.in_progress = self.rng.choice((1, 3, MAX_RECOVERY_ROUNDS + 5))

    async def settle(self, result: TerminalResult) -> TerminalResult:
        """Ask until the outcome is known (``last_result``), a restart now and then."""
        for _ in range(MAX_ASKS):
            if result.outcome is not Outcome.UNKNOWN:
                return result
            if self.rng.random() < 0.5:  # the gateway restarts: a new driver, the same state
                await self.term.close()
                self.term = self._driver()
                self.figures.restarts += 1
            result = await self.term.last_result(self.persist)
        self.figures.violations.append(f"still UNKNOWN after {MAX_ASKS} questions: {result}")
        return result

    async def command(self, name: str, send: object, hold: str | None = None) -> TerminalResult:
        """Run one money command (``send``: a zero-argument coroutine function) until the POI
        either did it or said it never took effect and it was sent again as a new command.
        After a restart the driver may have learnt "never took effect" in the life that died
        (it answers "no result known"): then, as the engine does, its open holds decide
        (``hold``: the one a completion or reversal settles; a reservation: a new open one)."""
        for _ in range(MAX_SENDS):
            before = await self.open_holds()
            self.arm(name)
            self.commands += 1
            result = await self.settle(await send())  # type: ignore[operator]
            if result.message == "no result known":
                now = await self.open_holds()
                new = sorted(now - before)
                if hold is None and len(new) == 1:  # the reservation was made: adopt it
                    return TerminalResult(result.operation, Outcome.APPROVED, ref=new[0])
                if (hold is None and not new) or (hold is not None and hold in now):
                    self.figures.resent_after_not_found += 1
                    continue  # it never took effect
            if "never took effect" not in result.message:
                return result
            self.figures.resent_after_not_found += 1
        return result

    async def open_holds(self) -> set[str]:
        listed = await self.term.open_preauthorizations()
        if not listed.approved:
            self.figures.violations.append(f"the open holds are not known: {listed.message}")
        return set(listed.open_refs)

    async def session(self, i: int) -> None:
        f = self.figures
        f.sessions += 1
        held = Money(self.rng.choice((1000, 2500, 5000)), "EUR")
        pre = await self.command(
            "reservation", lambda: self.term.preauthorize(held, f"S{i}", self.persist)
        )
        if not pre.approved or pre.ref is None:
            f.violations.append(f"session {i}: the reservation ended {pre.outcome}: {pre.message}")
            return
        ref = pre.ref
        if self.rng.random() < 0.75:
            amount = Money(self.rng.randrange(1, held.minor + 1), "EUR")
            done = await self.command(
                "completion",
                lambda: self.term.capture(ref, held, amount, f"S{i}", self.persist),
                ref,
            )
            f.completed += done.approved
        else:
            done = await self.command(
                "reversal", lambda: self.term.release(ref, held, self.persist), ref
            )
            f.reversed += done.approved
        if not done.approved:
            f.violations.append(
                f"session {i}: {done.operation} ended {done.outcome}: {done.message}"
            )

    def check(self) -> None:
        f = self.figures
        money = (nm.PaymentRequest, nm.ReversalRequest)
        reached = sum(isinstance(m.body, money) for m in self.poi.requests) + self.dropped
        if reached != self.commands:
            f.violations.append(f"{self.commands} money commands, the POI got {reached}")
        f.status_questions = sum(
            isinstance(m.body, nm.TransactionStatusRequest) for m in self.poi.requests
        )
        if self.poi.open_reservations():
            f.violations.append(f"open at the POI: {self.poi.open_reservations()}")
        captured: dict[str, Decimal] = {}  # the POI's TransactionID -> what the journal booked
        for r in self.journal:
            tid = r.details.get("poi_transaction_id", "")
            if (
                r.approved
                and r.amount is not None
                and r.details.get("payment_type") == "Completion"
            ):
                if tid in captured:
                    f.violations.append(f"reservation {tid} captured twice in the journal")
                captured[tid] = r.amount.to_decimal()
        for tid, t in self.poi.ledger.items():
            if t.kind != "reservation":
                f.violations.append(f"{t.kind} {tid} at the POI: no session made one")
            elif t.state == "completed" and captured.get(tid) != t.booked:
                f.violations.append(
                    f"{tid}: the POI booked {t.booked}, the journal {captured.get(tid)}"
                )
            elif t.state != "completed" and tid in captured:
                f.violations.append(f"{tid}: the journal captured, the POI says {t.state}")
        f.booked = self.poi.booked()
        if f.booked != sum(captured.values(), Decimal(0)):
            f.violations.append(f"the POI booked {f.booked}, the journal {sum(captured.values())}")


def run(size: str, seed: int, encoding: Encoding) -> Figures:
    logging.getLogger("drivers.nexo").setLevel(logging.ERROR)  # every loss is a warning there
    with tempfile.TemporaryDirectory(prefix="lost-nexo-") as tmp:
        return asyncio.run(LostNexo(Path(tmp), seed, SIZES[size], encoding).run())


def describe(f: Figures) -> str:
    lost = ", ".join(f"{c} {p} {n}" for (c, p), n in sorted(f.losses.items()))
    return (
        f"{f.sessions} sessions ({f.completed} completed, {f.reversed} reversed) in "
        f"{f.seconds:.0f} s; answers lost: {lost}; {f.status_questions} TransactionStatus "
        f"questions, {f.restarts} restarts, {f.resent_after_not_found} sent again after NotFound; "
        f"booked {f.booked} EUR = journal; {len(f.violations)} violation(s)"
    )
