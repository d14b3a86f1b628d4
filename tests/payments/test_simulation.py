"""Deterministic simulation of the payment engine (seeded; the seed is printed on failure).

Thousands of randomized sessions run through the real EngineHost and a real SQLite store
against a fake terminal that keeps its own books (what a real terminal would hold) and a
fake charger. Injected: declines, busy terminals, partial approvals, results lost before or
after the terminal acted, failed captures and releases, failed enquiries, EVs that never
start, charger faults, clock jumps, duplicated events, and gateway crashes (pending work
dropped, store reopened, every open session resumed) between any two steps.

Checked after every step and at the end:
- captured + released = authorized in every final session, captured <= authorized always;
- a completed session captured exactly the tariff price of its billed readings, capped by the hold;
- the terminal booked each receipt at most once, and its books match the session;
- no session stays open past its deadlines; no hold is left open at the terminal;
- every finished session has exactly one upstream outcome message;
- every finished session against the independent reference model (reference_model.py): the
  price from the tariff's JSON, each hold's capture (filled in order), captured per the
  terminal's own books, released, owed, and the FAC the CPO gets. Where they disagree on a
  defect of the session code still open (issue 26), the case is counted under
  its item number (KNOWN_EXCLUSIONS) and printed, never skipped silently.
"""

from __future__ import annotations

import heapq
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.base import Outcome
from drivers.money import Money
from gateway.ocpi.fac import fac_from_outcome
from gateway.ocpi.models import FinancialAdviceConfirmation
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.events import Operation
from gateway.payments.model import update
from gateway.payments.preauth import Strategy
from gateway.payments.record import compact, from_json
from gateway.payments.schemes import Validity
from gateway.payments.session import FINAL, HoldStatus, Policy, Session, State, violations
from gateway.payments.tariff import Sample, Tariff, price
from gateway.payments.tariff_ocpi import tariff_from_ocpi
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import T0, TARIFF, TZ, Clock, policy
from tests.payments.reference_model import Scenario, TerminalHold, expect


@dataclass
class Hold:
    session_id: str
    held: int
    expires_at: datetime
    trace: int
    state: str = "open"  # open, booked, released, lapsed
    booked: int = 0
    bookings: int = 0


@dataclass
class FakeTerminal:
    """The terminal's own books: survives gateway crashes, like a real terminal. It plays one
    echo convention for captures (the amount booked, or the amount released) and lets holds
    lapse at their scheme's validity."""

    rng: random.Random
    clock: Clock
    validity: Validity
    echo: str = "booked"
    # How a top-up is answered: a new reservation with its own receipt ("new"), or the same
    # reservation increased, answered with the increment ("increment") or with the
    # reservation's new total ("total"), as some terminals do.
    topup: str = "new"
    holds: dict[str, Hold] = field(default_factory=dict)  # by the reference it gave
    next_receipt: int = 1
    last: e.LastResult | None = None
    last_key: str = ""  # the command whose transaction ``last`` is
    trace: int = 0  # the last transaction's trace number (every transaction has its own)

    def _did(self, cmd: c.Command, ref: str, amount: int) -> None:
        """A transaction done: the terminal's last result (ZVT 06 20) is now this one."""
        self.trace += 1
        self.last = e.LastResult(approved=True, ref=ref, amount_minor=amount, trace_no=self.trace)
        self.last_key = getattr(cmd, "key", "")

    def _receipt(self) -> str:
        receipt, self.next_receipt = self.next_receipt, self.next_receipt + 1
        return str(receipt)

    def lapse(self) -> None:
        for hold in self.holds.values():
            if hold.state == "open" and self.clock.now >= hold.expires_at:
                hold.state = "lapsed"

    def open_refs(self) -> tuple[str, ...]:
        self.lapse()
        return tuple(r for r, h in self.holds.items() if h.state == "open")

    def run(self, cmd: c.Command, card: dict[str, str]) -> tuple[Outcome, int | None, str | None]:
        self.lapse()
        r = self.rng.random()
        if isinstance(cmd, c.Preauthorize):
            if r < 0.08:
                return Outcome.DECLINED, None, None
            if r < 0.11:
                return Outcome.BUSY, None, None
            if r < 0.13:
                return Outcome.UNKNOWN, None, None  # the line died before the terminal acted
            amount = (
                cmd.amount_minor if r > 0.2 else self.rng.randint(100, cmd.amount_minor)
            )  # partial approvals
            receipt = self._receipt()
            _, valid = self.validity.for_card(cmd.terminal, card)
            self.holds[receipt] = Hold(cmd.session_id, amount, self.clock.now + valid, int(receipt))
            self._did(cmd, receipt, amount)
            if r < 0.23:
                return Outcome.UNKNOWN, None, None  # approved, then the result was lost
            if r < 0.24:
                return (
                    Outcome.APPROVED,
                    amount,
                    None,
                )  # a faulty terminal: approval without a receipt number
            return Outcome.APPROVED, amount, receipt
        if isinstance(cmd, c.TopUp):
            first = self.holds.get(cmd.ref)
            if first is None or first.state != "open" or r < 0.3:
                return Outcome.ERROR, None, None
            if self.topup != "new":  # the same reservation, increased
                first.held += cmd.amount_minor
                answer = first.held if self.topup == "total" else cmd.amount_minor
                self._did(cmd, cmd.ref, answer)
                if r < 0.35:
                    return Outcome.UNKNOWN, None, None
                return Outcome.APPROVED, answer, cmd.ref
            receipt = self._receipt()
            self.holds[receipt] = Hold(
                cmd.session_id, cmd.amount_minor, first.expires_at, int(receipt)
            )
            self._did(cmd, receipt, cmd.amount_minor)
            if r < 0.35:
                return Outcome.UNKNOWN, None, None
            return Outcome.APPROVED, cmd.amount_minor, receipt
        if isinstance(cmd, (c.Capture, c.Release)):
            if r < 0.08:
                return Outcome.ERROR, None, None  # acquirer down: nothing happened
            if r < 0.12:
                return Outcome.DECLINED, None, None  # the capture was declined: nothing happened
            if r < 0.15:
                return Outcome.UNKNOWN, None, None  # lost before acting
            hold = self.holds.get(cmd.ref)
            if hold is None or hold.state != "open":
                return Outcome.ERROR, None, None  # B4 already reversed / B8 unknown
            amount = cmd.amount_minor if isinstance(cmd, c.Capture) else 0
            assert amount <= hold.held, f"capture {amount} above the hold {hold.held}"
            hold.state, hold.booked, hold.bookings = (
                ("booked" if amount else "released"),
                amount,
                hold.bookings + 1,
            )
            echo = (
                hold.held - amount
                if self.echo == "reversed" and isinstance(cmd, c.Capture)
                else amount
            )
            booking = self._receipt()
            self._did(cmd, booking, echo)
            if r < 0.21:
                return Outcome.UNKNOWN, None, None  # done, then the result was lost
            return Outcome.APPROVED, echo, booking
        raise AssertionError(cmd)


@dataclass(order=True)
class Scheduled:
    at: datetime
    seq: int
    event: e.Event = field(compare=False)
    volatile: bool = field(compare=False, default=False)  # lost when the gateway crashes


CARDS = (
    {"brand": "MasterCard", "aid": "A0000000041010", "masked_pan": "541333******0074"},
    {"brand": "VISA", "aid": "A0000000031010", "masked_pan": "411111******1111"},
    {
        "brand": "Fleet",
        "masked_pan": "700000******0001",
    },  # unknown scheme: the conservative validity
)


def _component(kind: str, price: str, step: int = 1) -> dict[str, object]:
    return {"type": kind, "price": price, "vat": "19", "step_size": step}


# The fixtures' tariff as the CPO would send it: the reference model reads this JSON, never the
# engine's Tariff objects (checked equal below, so both price the same published tariff).
TARIFF_JSON: dict[str, object] = {
    "id": "T1",
    "currency": "EUR",
    "elements": [
        {"price_components": [_component("FLAT", "1.00")]},
        {
            "price_components": [_component("ENERGY", "0.35")],
            "restrictions": {"start_time": "22:00", "end_time": "06:00"},
        },
        {"price_components": [_component("ENERGY", "0.45")]},
        {
            "price_components": [_component("PARKING_TIME", "6.00", 60)],
            "restrictions": {"min_duration": 4 * 3600},
        },
    ],
}
# Weekend and a one-day promotion (cut at local midnight), charging time and parking billed by
# the elapsed hour (a DST night), a minimum price.
WEEKEND_JSON: dict[str, object] = {
    "id": "W1",
    "currency": "EUR",
    "min_price": "0.50",
    "elements": [
        {
            "price_components": [_component("ENERGY", "0.20")],
            "restrictions": {"start_date": "2026-03-29", "end_date": "2026-03-30"},
        },
        {
            "price_components": [_component("ENERGY", "0.55"), _component("TIME", "0.60", 60)],
            "restrictions": {"day_of_week": ["SATURDAY", "SUNDAY"]},
        },
        {"price_components": [_component("ENERGY", "0.40"), _component("TIME", "0.30", 60)]},
        {"price_components": [_component("PARKING_TIME", "2.40", 60)]},
    ],
}


@dataclass(frozen=True)
class Variant:
    """A corner of the scenario space: the tariff, when the simulated day starts, and the
    terminal's own (acquirer's) validity table."""

    name: str
    tariff_json: dict[str, object]
    start: datetime = T0
    terminal_validity: dict[str, timedelta] = field(default_factory=dict)
    topup: str = "new"  # FakeTerminal.topup


VARIANTS = {
    "plain": Variant("plain", TARIFF_JSON),
    # Friday evening into Saturday (Europe/Berlin): the weekday restriction changes at local
    # midnight; a 48 h acquirer whatever the scheme.
    "weekday-midnight": Variant(
        "weekday-midnight",
        WEEKEND_JSON,
        datetime(2026, 3, 27, 20, 0, tzinfo=UTC),
        {"default": timedelta(hours=48)},
    ),
    # Saturday evening through the spring DST night (02:00 does not exist on 29 March 2026) and
    # into a one-day promotion (start_date/end_date cut at local midnight).
    "dst-night": Variant(
        "dst-night",
        WEEKEND_JSON,
        datetime(2026, 3, 28, 20, 0, tzinfo=UTC),
        {"default": timedelta(hours=48), "visa": timedelta(days=3)},
    ),
    # Top-ups that increase the first reservation, answered with the increment or with the
    # reservation's new total.
    "topup-increment": Variant("topup-increment", TARIFF_JSON, topup="increment"),
    "topup-total": Variant("topup-total", TARIFF_JSON, topup="total"),
}

# The default suite replays one seed, so that it never fails by the draw; random seeds, which
# keep finding new disagreements, run with --sim-random (the seed is printed for --sim-seed).
# Seed 1668930904 was one such finding (a hold's validity counted from its late answer):
# replayed by test_simulation_seed_1668930904 below.
SUITE_SEED = 424242

# Disagreements with the reference model that are open defects of the engine (issue 26). Each
# is counted and printed under its item; anything else fails the run. Items 3, 4 and 12, the
# late top-up, the adopted hold and the hold larger than known are fixed: a disagreement of
# their shape fails the run now.
KNOWN_EXCLUSIONS = {
    "item 5": "a capture the terminal booked ends capture_unconfirmed: owed in full and FAILED",
}
# Fixed: "new: lost top-up unused" (a top-up that raised the first reservation, its answer
# lost: the session now asks the terminal before it bills, test_reference_findings.py). What
# stays is no defect and is counted apart (``unproven``): the enquiry failed or the terminal's
# last result was another transaction, so nothing proves the raised hold and the session
# captures what it can prove, the rest owed and visible.


class Simulation:
    def __init__(
        self,
        seed: int,
        path: Path,
        strategy: Strategy,
        sessions: int,
        variant: Variant = VARIANTS["plain"],
    ) -> None:
        self.seed, self.path, self.sessions = seed, path, sessions
        self.rng = random.Random(seed)
        self.clock = Clock(variant.start)
        self.variant = variant
        tariff = tariff_from_ocpi(variant.tariff_json)
        validity = Validity(terminals={"T1": variant.terminal_validity})
        self.policy: Policy = policy(
            strategy,
            topup_terminals=frozenset({"T1"}),
            tariffs={"*": tariff},
            validity=validity,
        )
        self.excluded: dict[str, list[str]] = {}
        # sessions the terminal's answer to an enquiry showed a top-up of (its last result)
        self.topup_shown: set[str] = set()
        # lost top-ups nothing proved (the enquiry failed, or the terminal's last result was
        # another transaction): the session must not count money it cannot prove it holds
        self.unproven: list[str] = []
        echo = "reversed" if seed % 2 else "booked"
        self.terminal = FakeTerminal(
            random.Random(seed + 1), self.clock, self.policy.validity, echo, variant.topup
        )
        self.store = Store.open(path, clock=self.clock)
        self.host = EngineHost(self.store, self.policy, self.clock)
        self.queue: list[Scheduled] = []
        self.seq = 0
        self.charging: dict[str, int] = {}  # session -> meter Wh while the fake charger delivers
        self.cards: dict[str, dict[str, str]] = {}
        self.silent: set[str] = (
            set()
        )  # sessions whose charger started without telling us (ambiguous start)
        self.crashes = self.duplicates = self.steps = 0
        self.last_sweep = self.clock.now
        self.recovering = False

    def fail(self, message: str) -> None:
        raise AssertionError(f"seed {self.seed}: {message}")

    def schedule(self, delay_s: float, event: e.Event, volatile: bool = False) -> None:
        self.seq += 1
        heapq.heappush(
            self.queue,
            Scheduled(self.clock.now + timedelta(seconds=delay_s), self.seq, event, volatile),
        )

    # ---- the world reacting to commands --------------------------------------------------------

    def execute(self, cmd: c.Command) -> None:
        sid = cmd.session_id if not isinstance(cmd, c.Enqueue) else ""
        if isinstance(cmd, (c.Preauthorize, c.TopUp, c.Capture, c.Release)):
            card = self.cards.setdefault(sid, self.rng.choice(CARDS))
            outcome, amount, receipt = self.terminal.run(cmd, card)
            op = {
                c.Preauthorize: Operation.PREAUTHORIZE,
                c.TopUp: Operation.TOPUP,
                c.Capture: Operation.CAPTURE,
                c.Release: Operation.RELEASE,
            }[type(cmd)]
            for_ref = None if isinstance(cmd, c.Preauthorize) else cmd.ref
            trace = (
                self.terminal.trace
                if receipt is not None and op in (Operation.PREAUTHORIZE, Operation.TOPUP)
                else None
            )
            ev: e.Event = e.TerminalResultArrived(
                session_id=sid,
                event_id=f"{cmd.key}:{self.seq}",
                operation=op,
                outcome=outcome,
                amount_minor=amount,
                ref=receipt,
                card=card if outcome is Outcome.APPROVED else {},
                for_ref=for_ref,
                trace_no=trace,
            )
            self.schedule(self.rng.uniform(1, 20), ev, volatile=True)
        elif isinstance(cmd, c.QueryOpenPreauths):
            failed = self.rng.random() < 0.15
            last = None if failed or self.rng.random() < 0.1 else self.terminal.last
            if last is not None and self.terminal.last_key.startswith(f"{sid}:topup"):
                self.topup_shown.add(sid)  # the terminal's answer shows this session's top-up
            ev = e.OpenPreauthsReported(
                sid,
                f"{cmd.key}:{self.seq}",
                self.terminal.open_refs(),
                failed=failed,
                last=last,
            )
            self.schedule(self.rng.uniform(1, 5), ev, volatile=True)
        elif isinstance(cmd, c.AuthorizeCharger):
            r = self.rng.random()
            if r < 0.1:
                return  # the EV never starts: the start timer must release the hold
            if r < 0.13:  # an ambiguous start: it charges, we hear only the stop, after the release
                self.silent.add(sid)
                self.schedule(
                    self.rng.uniform(400, 3600),
                    e.ChargerStopped(
                        session_id=sid,
                        event_id="late-cdr",
                        meter_wh=None,
                        session_energy_wh=self.rng.randint(1, 20_000),
                    ),
                )
                return
            self.charging[sid] = 100_000
            self.schedule(self.rng.uniform(5, 60), e.ChargerStarted(sid, "start", 100_000))
            self.plan_charge(sid)
        elif isinstance(cmd, c.StopCharger) and sid in self.charging and self.rng.random() < 0.9:
            self.schedule(
                self.rng.uniform(1, 30),
                e.ChargerStopped(
                    session_id=sid, event_id=f"stopped:{cmd.key}", meter_wh=self.charging[sid]
                ),
            )

    def plan_charge(self, sid: str) -> None:
        at, meter = self.rng.uniform(60, 120), 100_000
        for i in range(self.rng.randint(0, 30)):
            at += self.rng.uniform(60, 900)
            meter += self.rng.randint(0, 4000)
            self.schedule(at, e.MeterValue(sid, f"mv{i}", meter, trusted=self.rng.random() > 0.1))
        end = self.rng.random()
        if end < 0.1:
            self.schedule(at + 30, e.ChargerFaulted(sid, "fault", "ground fault"))
        else:
            meter += self.rng.randint(0, 500)
            total = meter - 100_000 + (self.rng.randint(-50, 50) if end < 0.3 else 0)
            self.schedule(
                at + 60,
                e.ChargerStopped(
                    session_id=sid,
                    event_id="driver-stop",
                    meter_wh=meter if end > 0.2 else None,
                    session_energy_wh=total,
                ),
            )

    # ---- the gateway --------------------------------------------------------------------------

    def all_sessions(self) -> list[Session]:
        loaded = [self.host.load(r["id"]) for r in self.store.sessions(limit=100_000)]
        assert None not in loaded  # every listed row loads
        return [s for s in loaded if s is not None]

    def handle(self, event: e.Event) -> None:
        result = self.host.handle(
            event
        )  # transition() checks the ledger and liveness on every step
        self.steps += 1
        if isinstance(event, e.MeterValue) and event.session_id in self.charging:
            self.charging[event.session_id] = max(self.charging[event.session_id], event.meter_wh)
        if result.session is not None:
            self.check_session(result.session)
            if result.applied:  # what the host keeps in memory for the next step is what was stored
                stored = self.store.session(result.session.id)
                assert stored is not None and from_json(stored["data"]) == result.session, (
                    result.session.id
                )
                if (
                    result.session.state in FINAL
                ):  # retention's compacted row loses only the readings
                    assert from_json(compact(stored["data"])) == update(result.session, readings=())
            if result.session.timer:
                kind, at = result.session.timer
                self.seq += 1
                heapq.heappush(
                    self.queue,
                    Scheduled(
                        at,
                        self.seq,
                        e.TimerFired(result.session.id, f"timer:{kind}:{at}", kind),
                        volatile=True,
                    ),
                )
        if result.commands and not self.recovering and self.rng.random() < 0.01:
            self.crash()  # crashed right after the step was stored: its commands never ran
            return
        for cmd in result.commands:
            self.execute(cmd)

    def crash(self) -> None:
        self.crashes += 1
        self.recovering = True
        self.queue = [s for s in self.queue if not s.volatile]
        heapq.heapify(self.queue)
        self.store.close()
        self.store = Store.open(self.path, clock=self.clock)
        self.host = EngineHost(self.store, self.policy, self.clock)
        for session in self.host.open_sessions():
            self.handle(e.Resumed(session.id, f"resume:{self.crashes}"))
            if session.timer:  # re-arm from the stored state
                kind, at = session.timer
                self.schedule(
                    max(0.0, (at - self.clock.now).total_seconds()),
                    e.TimerFired(session.id, f"timer:{kind}:{at}", kind),
                    volatile=True,
                )
        self.recovering = False

    def next_card(self) -> None:
        """Drivers arrive one after another (now and then two at once), relative to the clock, so
        a clock jump does not make every later driver arrive at the same instant."""
        i = self.cards_presented
        if i >= self.sessions:
            return
        self.cards_presented += 1
        gap = self.rng.uniform(0, 2) if self.rng.random() < 0.05 else self.rng.uniform(10, 400)
        self.schedule(
            gap, e.CardPresented(f"{self.seed:x}-{i:05d}", "card", f"EVSE-{i % 4}", "T1", "EUR")
        )

    def run(self) -> None:
        self.cards_presented = 0
        self.next_card()
        sweeps = 0
        while True:
            if not self.queue:  # drained: a last terminal sweep, and go on if it found orphans
                sweeps += 1
                self.clock.advance(600)
                for cmd in self.host.sweep("T1", self.terminal.open_refs(), "EUR", f"end{sweeps}"):
                    self.execute(cmd)
                if not self.queue:
                    break
                continue
            item = heapq.heappop(self.queue)
            if item.at - self.last_sweep > timedelta(minutes=30):
                self.last_sweep = item.at
                for cmd in self.host.sweep("T1", self.terminal.open_refs(), "EUR", str(self.seq)):
                    self.execute(cmd)
            if item.at > self.clock.now:
                self.clock.now = item.at
            if self.rng.random() < 0.002:
                self.clock.advance(self.rng.uniform(3600, 6 * 3600))  # clock jump / long stall
            if self.rng.random() < 0.0003:
                self.clock.advance(
                    self.rng.uniform(20 * 3600, 40 * 3600)
                )  # a stall into the holds' expiry windows
            if isinstance(item.event, e.CardPresented):
                self.next_card()
            self.handle(item.event)
            if self.rng.random() < 0.05:
                self.duplicates += 1
                self.handle(item.event)  # redelivered: must change nothing
            if self.rng.random() < 0.004:
                self.crash()
        self.final_checks()

    # ---- invariants ----------------------------------------------------------------------------

    def check_session(self, s: Session) -> None:
        problems = violations(s)
        if problems:
            self.fail(f"{s.id} {s.state}: {problems}")
        if s.state is State.COMPLETED:
            if s.bill.unpaid_energy_wh:
                return
            billed = price(
                self.policy.tariffs["*"],
                [Sample(r.at, r.energy_wh) for r in s.metering.billed_readings()],
                TZ,
            ).minor
            billed = billed if s.metering.billed_energy_wh else 0
            # The price, capped by what was held when the charge stopped (a top-up approved later is released).
            if s.captured_minor + s.bill.owed_minor != billed or s.captured_minor > min(
                billed, s.authorized_minor
            ):
                self.fail(
                    f"{s.id} captured {s.captured_minor} + owed {s.bill.owed_minor}, tariff says {billed}, "
                    f"hold {s.authorized_minor}"
                )

    def final_checks(self) -> None:
        sessions = self.all_sessions()
        by_id = {s.id: s for s in sessions}
        assert len([s for s in sessions if not s.id.startswith("orphan-")]) == self.sessions
        conn = sqlite3.connect(self.path)
        outcomes = dict(
            conn.execute(
                "SELECT object_key, count(*) FROM outbox WHERE message_id LIKE '%:outcome' GROUP BY object_key"
            )
        )
        conn.close()
        owing = {r["id"] for r in self.store.sessions(owing=True, limit=100_000)}
        for s in sessions:
            if not s.final:
                self.fail(f"{s.id} left open in {s.state} (timer {s.timer})")
            self.check_session(s)
            # an unconfirmed capture's outcome waits for the end-of-day evidence (issue 26)
            expected = 0 if s.state is State.CAPTURE_UNCONFIRMED else 1
            if outcomes.get(f"session:{s.id}", 0) != expected:
                self.fail(f"{s.id} has {outcomes.get(f'session:{s.id}', 0)} outcome messages")
            if (s.bill.owed_minor > 0) != (s.id in owing):
                self.fail(
                    f"{s.id} owes {s.bill.owed_minor} but `sessions --owing` says {s.id in owing}"
                )
            if (
                s.id in self.silent
                and not s.bill.unpaid_energy_wh
                and not s.metering.billed_energy_wh
            ):
                self.fail(f"{s.id}: energy delivered after an ambiguous start was dropped")
            for h in (
                s.holds
            ):  # booked only on positive evidence: what the session says, the terminal did
                books = self.terminal.holds.get(h.ref)
                if books is None or books.session_id != s.id:
                    continue
                if books.bookings > 1:
                    self.fail(f"{s.id} receipt {h.ref} booked {books.bookings} times")
                if h.status is HoldStatus.CAPTURED and (books.state, books.booked) != (
                    "booked",
                    h.captured_minor,
                ):
                    self.fail(
                        f"{s.id} says hold {h.ref} captured {h.captured_minor}, terminal: {books}"
                    )
                if books.state == "booked" and h.status not in (
                    HoldStatus.CAPTURED,
                    HoldStatus.UNCONFIRMED,
                ):
                    self.fail(
                        f"{s.id}: terminal booked hold {h.ref} but the session says {h.status}"
                    )
        for receipt, hold in self.terminal.holds.items():
            owner = by_id.get(hold.session_id)
            if hold.state == "open":
                self.fail(
                    f"receipt {receipt} of {hold.session_id} still held at the terminal ({owner and owner.state})"
                )
            if (
                hold.state == "booked"
                and owner is not None
                and not any(h.ref == receipt for h in owner.holds)
            ):
                self.fail(
                    f"receipt {receipt} booked for {hold.session_id}, which does not know the hold"
                )
        assert self.store.verify_journal().ok
        self.compare_with_model(sessions)

    # ---- the independent reference model -----------------------------------------------------

    def compare_with_model(self, sessions: list[Session]) -> None:
        messages = self.store.outbox.list(kind="session.outcome")
        outcomes = {  # the session's own outcome; energy reported after it has one of its own
            str(m.payload["session_id"]): dict(m.payload)
            for m in messages
            if not m.payload.get("debt_only")
        }
        apart = {
            str(m.payload["session_id"]): dict(m.payload)
            for m in messages
            if m.payload.get("debt_only")
        }
        # Each hold the terminal made belongs to one session: the driver's that knows it, else
        # the sweep's orphan session that adopted it.
        owner: dict[str, str] = {}
        for s in sorted(sessions, key=lambda x: x.id.startswith("orphan-")):
            for h in s.holds:
                books = self.terminal.holds.get(h.ref)
                if (
                    books is not None
                    and h.ref not in owner
                    and (books.session_id == s.id or s.id.startswith("orphan-"))
                ):
                    owner[h.ref] = s.id
        for s in sessions:
            holds = [
                TerminalHold(h.ref, b.held, b.state, b.booked)
                for h in s.holds
                if (b := self.terminal.holds.get(h.ref)) is not None and owner.get(h.ref) == s.id
            ]
            readings = (
                [(r.at, r.energy_wh) for r in s.metering.billed_readings()]
                if s.metering.billed_energy_wh
                else []
            )
            scenario = Scenario(
                self.variant.tariff_json,
                TZ,
                readings,
                holds,
                had_reference=bool(s.reference),
                late_wh=s.bill.unpaid_energy_wh,
                late_from=(s.metering.readings[0].at if s.metering.readings else s.created_at),
                late_told_apart=s.id in apart,
            )
            want = expect(scenario)
            got: dict[str, object] = {
                "captured": s.captured_minor,
                "released": s.released_minor,
                "owed": s.bill.owed_minor,
                "fac": _fac(outcomes.get(s.id), self.clock.now),
                "late_fac": _fac(apart.get(s.id), self.clock.now),
            }
            expected: dict[str, object] = {
                "captured": want.captured,
                "released": want.released,
                "owed": want.owed if s.state in _PRICED else want.late_owed,
                "fac": want.fac,
                "late_fac": want.late_fac,
            }
            if s.state is State.CAPTURE_UNCONFIRMED:
                # The engine does not know what the terminal did: it tells the CPO nothing until
                # the end-of-day evidence decides (never an outcome it does not know).
                expected["fac"] = None
            if s.id.startswith("orphan-"):
                # A sweep learns only the receipt numbers of the holds it releases (ZVT's open
                # pre-auth list has no amounts): what it released is not known to it.
                del got["released"], expected["released"]
            if s.state is State.COMPLETED:
                got["price"], expected["price"] = s.bill.price_minor, want.price
                got["plan"] = {h.receipt: h.booked for h in holds}
                expected["plan"] = dict(want.capture_by_hold)
            if got == expected:
                continue
            mine = {h.ref: h for h in s.holds}
            unknown = any(  # held money left uncaptured, held by a top-up the session never knew
                h.state in ("booked", "released")
                and want.capture_by_hold.get(h.receipt, 0) > h.booked
                and mine[h.receipt].uncertain
                and h.approved > mine[h.receipt].amount_minor
                for h in holds
            )
            if unknown and s.id not in self.topup_shown and s.state is State.COMPLETED:
                self.unproven.append(f"{s.id} {s.state}: engine {got}, model {expected}")
                continue  # no evidence of the raised hold ever reached the session: no defect
            item = self._known(s, want.captured)
            differs = {k for k in expected if got.get(k) != expected[k]}
            if item is None and differs == {"released"} and self._released_at_least(s):
                continue  # the session says its released figure is a floor: the rest unknown
            said = f"{s.id} {s.state}: engine {got}, model {expected}"
            if item is None:
                self.fail(f"the reference model disagrees: {said}")
                continue
            self.excluded.setdefault(item, []).append(said)

    def _released_at_least(self, s: Session) -> bool:
        """Does every hold the terminal held more of than the session knows say, on the
        session's record, that what it released is only the part we know (a lost top-up)?"""
        bigger = [
            h
            for h in s.holds
            if (b := self.terminal.holds.get(h.ref)) is not None
            and b.session_id == s.id
            and b.held > h.amount_minor
        ]
        said = " ".join(s.discrepancies)
        return bool(bigger) and all(
            h.uncertain and f"hold {h.ref}: released at least" in said for h in bigger
        )

    def _known(self, s: Session, booked: int) -> str | None:
        """The open session-code defect a disagreement is, or None (then it fails)."""
        if s.state is State.CAPTURE_UNCONFIRMED and booked:
            return "item 5"
        return None


_PRICED = frozenset({State.COMPLETED, State.CAPTURE_FAILED, State.CAPTURE_UNCONFIRMED})


def _fac(payload: dict[str, object] | None, now: datetime) -> tuple[str, int] | None:
    """The (status, amount) of the FAC an outcome message becomes, or None."""
    fac = fac_from_outcome(payload, now) if payload else None
    return (fac.capture_status_code.value, _minor(fac)) if fac else None


def _minor(fac: FinancialAdviceConfirmation) -> int:
    """The FAC's amount (before taxes plus the taxes) in minor units."""
    taxes = sum((Decimal(str(t.amount)) for t in fac.total_costs.taxes or ()), Decimal(0))
    total = Decimal(str(fac.total_costs.before_taxes)) + taxes
    return Money.parse(str(total), fac.currency).minor


def test_the_reference_model_prices_the_simulations_tariff_json() -> None:
    """Both sides price one published tariff: its JSON is the fixtures' Tariff."""
    assert tariff_from_ocpi(TARIFF_JSON) == TARIFF
    assert isinstance(tariff_from_ocpi(WEEKEND_JSON), Tariff)


def _run(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    sessions: int,
    variant: str = "plain",
    replay: int | None = None,
) -> None:
    seed = (
        replay
        or request.config.getoption("--sim-seed")
        or (random.randrange(2**31) if request.config.getoption("--sim-random") else SUITE_SEED)
    )
    print(f"simulation seed {seed} (repeat with --sim-seed {seed})")  # shown when it fails
    totals: dict[str, int] = {}
    excluded: dict[str, list[str]] = {}
    unproven: list[str] = []
    for strategy in ("fixed", "target", "incremental"):
        path = tmp_path / f"{variant}-{strategy}.sqlite3"
        sim = Simulation(seed, path, strategy, sessions, VARIANTS[variant])
        sim.run()
        for s in sim.all_sessions():
            totals[s.state.value] = totals.get(s.state.value, 0) + 1
            totals["multi_hold"] = totals.get("multi_hold", 0) + (len(s.holds) > 1)
            totals["owing"] = totals.get("owing", 0) + (s.bill.owed_minor > 0)
            totals["unpaid_energy"] = totals.get("unpaid_energy", 0) + (s.bill.unpaid_energy_wh > 0)
        totals["crashes"] = totals.get("crashes", 0) + sim.crashes
        totals["duplicates"] = totals.get("duplicates", 0) + sim.duplicates
        totals["steps"] = totals.get("steps", 0) + sim.steps
        for item, cases in sim.excluded.items():
            excluded.setdefault(item, []).extend(cases)
        unproven += sim.unproven
    print(f"simulation {variant} seed {seed}: {totals}")
    for item, cases in sorted(excluded.items()):  # listed, never silent
        print(
            f"  reference model: {len(cases)} known exclusion(s), {item} ({KNOWN_EXCLUSIONS[item]})"
        )
        for case in cases[:3]:
            print(f"    e.g. {case}")
    if unproven:  # listed, never silent: a lost top-up the terminal's answers never proved
        print(f"  reference model: {len(unproven)} lost top-up(s) with no evidence (owed)")
        for case in unproven[:3]:
            print(f"    e.g. {case}")
    # Faults are frequent on purpose (lost results, crashes), yet sessions must still get charged.
    assert totals.get("completed", 0) > sessions // 2
    assert totals["crashes"] > 0 and totals["duplicates"] > 0
    assert set(totals) & {s.value for s in FINAL} >= {"completed", "voided", "declined"}


@pytest.mark.timeout(1200)  # a hang guard: 600 s was too tight on a loaded 2-core machine
def test_simulation_default(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """900 seeded sessions (300 per strategy) in the default suite, on ``SUITE_SEED`` unless
    ``--sim-random`` draws one; ``--run-slow`` runs 5,000 per strategy. (700 per strategy took a
    fifth of the suite's time on this 2-core machine; 450 still 40 s of it.)"""
    _run(tmp_path, request, sessions=300)


@pytest.mark.parametrize("variant", ["weekday-midnight", "dst-night"])
def test_simulation_restrictions_and_dst(
    tmp_path: Path, request: pytest.FixtureRequest, variant: str
) -> None:
    """450 sessions each (150 per strategy) across a weekday change at local midnight, or the
    spring DST night and a one-day promotion, on a 48 h acquirer."""
    _run(tmp_path, request, sessions=150, variant=variant)


@pytest.mark.parametrize(
    "variant",
    [
        "topup-increment",
        "topup-total",
    ],
)
def test_simulation_topup_conventions(
    tmp_path: Path, request: pytest.FixtureRequest, variant: str
) -> None:
    """450 sessions each with top-ups that raise the first reservation."""
    _run(tmp_path, request, sessions=150, variant=variant)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_simulation_large(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _run(tmp_path, request, sessions=5000)
    for variant in ("weekday-midnight", "dst-night"):
        _run(tmp_path, request, sessions=1000, variant=variant)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_simulation_seed_1668930904(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A capture_unconfirmed session recorded a release of 1500 the terminal never made: its
    hold's validity was counted from an answer heard 27 h late (fixed; the exact sequence is
    test_reference_findings.py's first test)."""
    _run(tmp_path, request, sessions=700, replay=1668930904)
