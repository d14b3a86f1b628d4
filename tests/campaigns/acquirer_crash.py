"""Acquirer crash: the real daemon SIGKILLed around each online modification and webhook.

The crash campaign's site with an Adyen terminal: a nexo POI simulator (Adyen JSON) authorises,
and top-ups, captures and releases go to the simulated Checkout API (``evpay simulate
acquirer``'s), whose signed webhooks come back to the daemon's OCPI listener. All but the daemon
lives here and survives its deaths: the POI, the acquirer (its ledger, its webhooks under way),
the charger firmware on a real mosquitto plugging EVs in again and again, the CPO. Between kills
the acquirer shows a random one of its variants: slow, duplicated or lost webhooks, capture
failed after received, response lost after applied. Lost webhooks are delivered late, after
their deadline (counted from the 201, earlier): the session they leave open refuses every EV
at its EVSE until they come; a webhook the dead daemon did not accept is sent again
after the next start (Adyen retries for days).

Kills land at random and at the dangerous points, aimed from the acquirer's side and the store:
``stored`` (the acquirer answers 503: queued, never taken), ``sent`` (held at the acquirer,
applied or not, the answer unread), ``received`` (201 stored, the webhook slowed), ``webhook``
(a webhook POST under way: stored or not, ``[accepted]`` or not), ``applied`` (the CPO down: a
session settled by a webhook, its FAC not yet sent).

Then the books: one modification per idempotency key, each the store's; each one confirmed by
a stored webhook (a 201 "received" is no outcome); at most one capture
per payment, none above what was authorised; the store's captured and refunded amounts are the
acquirer's ledger; no FAC contradicts it; no hold at the POI is open that no session owns; no
secret or card number in the database or the logs."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.acquirer.adyen_requests import idempotency_key
from gateway.runtime.acquirer_outcomes import split_key
from tests.acquirer.adyen_site import open_site
from tests.acquirer.rig import API_KEY, HMAC_KEY, WEBHOOK_PASSWORD
from tests.acquirer.test_crash_acquirer import _query
from tests.campaigns import scan
from tests.campaigns.acquirer_aimed import AimedAdyen, TappingCharger
from tests.campaigns.crash import Campaign, Figures, gross_minor
from tests.firmware_bridge.conftest import MOSQUITTO, Broker

# kills (at least), EVSEs on the one Adyen terminal
SIZES = {"small": (5, 1), "full": (100, 2)}
POINTS = ("stored", "sent", "received", "webhook", "applied")
MIXES = ((), ("slow",), ("duplicate",), ("lost",), ("capture_failed",), ("response_lost",))
# the variants under which a point never comes: a 201 whose answer is lost is read on the retry,
# often after its webhook; a lost webhook is not under way, nor does it settle a session
DEFEATS = {"received": {"response_lost"}, "webhook": {"lost"}, "applied": {"lost"}}
DEADLINE_S = 4  # the webhook deadline: a lost webhook makes its capture unconfirmed this soon
SLOW_S = 1.5
REPLUG_S = 1.0  # an EV refused (its EVSE's last session still open) asks again this soon
LATE_WAIT_S = 60.0  # after the late deliveries, the bound on the wait for every outcome
CONTRADICTED, UNDONE = "after its success was booked", "is undone and owed"  # capture_undone.py
QUEUED = "SELECT count(*) FROM acquirer_modifications WHERE status = 'queued'"
RECEIVED = "SELECT command_key FROM acquirer_modifications WHERE status = 'received'"
SETTLED = "SELECT count(*) FROM sessions WHERE final = 1"
UNPROVEN = (  # confirmed by no stored webhook: booked without the acquirer's evidence (a 201?)
    "SELECT command_key FROM acquirer_modifications m WHERE status = 'confirmed' AND NOT EXISTS"
    " (SELECT 1 FROM acquirer_notifications n WHERE n.dedupe_key = m.settled_by"
    " AND n.command_key = m.command_key AND n.success = 1)"
)
OPEN_AT = "SELECT json_extract(data, '$.evse') FROM sessions WHERE final = 0"
UNSETTLED = (
    "SELECT (SELECT count(*) FROM acquirer_modifications WHERE status IN ('queued', 'received'))"
    " + (SELECT count(*) FROM sessions WHERE final = 0 OR state = 'capture_unconfirmed')"
)


@dataclass
class AcquirerFigures(Figures):
    points: Counter[str] = field(default_factory=Counter)  # aimed kills, by point
    modifications: int = 0  # applied at the acquirer
    by_kind: Counter[str] = field(default_factory=Counter)
    webhooks: int = 0  # accepted by the daemon
    redelivered: int = 0  # not accepted (the daemon was dead), sent again after a start
    late: int = 0  # lost, delivered after the deadline
    contradicted: int = 0  # sessions booked on CAPTURE, then told CAPTURE_FAILED
    findings: list[str] = field(default_factory=list)  # open, documented, not violations


class AcquirerCampaign(Campaign):
    def __init__(self, workdir: Path, seed: int, kills: int, evses: int) -> None:
        super().__init__(workdir, seed, kills, evses, short=True)
        self.figures: AcquirerFigures = AcquirerFigures()

    async def start(self) -> None:
        self.broker = Broker(self.dir)
        self.broker.start()
        self.site = await open_site(
            self.dir / "evpay.sqlite3",
            deadline=DEADLINE_S,
            slow_s=SLOW_S,
            incremental=True,
            evses=self.evses,
            charger=f"[charger]\nenabled = true\n{self.broker.toml()}\n",
            make=lambda state: AimedAdyen(state, self.rng.random),
        )
        assert isinstance(self.site.adyen, AimedAdyen)
        self.adyen, self.poi, self.cpo = self.site.adyen, self.site.poi, self.site.cpo
        self.tapping = TappingCharger(self.broker.settings("charger"), self.evses)
        self.charger = self.tapping
        self.charger_stop = asyncio.Event()
        self.charger_task = asyncio.create_task(self.charger.run(self.charger_stop))
        self.replugging = asyncio.create_task(self._replug())
        self.config = self.dir / "gateway.toml"
        self.config.write_text(self.site.text, encoding="utf-8")

    async def close(self) -> None:
        self.replugging.cancel()
        self.charger_stop.set()
        await asyncio.gather(self.charger_task, self.replugging, return_exceptions=True)
        await self.site.close()
        self.broker.stop()
        self.log.close()

    async def _replug(self) -> None:
        """An EV plugged in while the daemon was dead is refused on its restart when the last
        session at that EVSE is still settling ("already has an open session"), and nobody
        tells the charger: its driver would wait 20 s. Like a driver who taps again, the EV
        asks once more when no session is open at its EVSE and no answer came in REPLUG_S."""
        since: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.2)
            open_at = {str(r[0]) for r in _query(self.dir / "evpay.sqlite3", OPEN_AT)}
            for evse, asked in list(self.tapping.asking.items()):
                if len(self.charger.evses[evse].authorized) > asked:
                    del self.tapping.asking[evse]
                    since.pop(evse, None)
                elif evse in open_at or evse not in since:
                    since[evse] = loop.time()
                elif loop.time() - since[evse] > REPLUG_S:
                    await self.tapping.ask_again(evse)
                    since[evse] = loop.time()

    def _count(self, sql: str) -> int:
        found = _query(self.dir / "evpay.sqlite3", sql)
        return int(str(found[0][0])) if found else 0

    def _received(self) -> set[str]:
        return {str(r[0]) for r in _query(self.dir / "evpay.sqlite3", RECEIVED)}

    async def _until(self, check: Callable[[], bool]) -> None:
        """Poll ``check``; meanwhile a lost webhook past its deadline comes late: the session
        it leaves open would refuse every EV at its EVSE until it does."""
        while not check():
            await asyncio.sleep(0.02)
            self.figures.late += await self.adyen.deliver_late(older_s=DEADLINE_S)

    async def _kills(self) -> None:
        rounds = 0
        while rounds < self.kills:
            rounds += 1
            mix = set(self.rng.choice(MIXES))
            aimed = rounds <= len(POINTS) or self.rng.random() < 0.5  # each point once, then half
            point = POINTS[(rounds - 1) % len(POINTS)] if aimed else None
            mix -= DEFEATS.get(point or "", set())
            self.adyen.losing = "lost" in mix
            self.adyen.state.variants = mix - {"lost"}
            if point is None:
                await asyncio.sleep(self.rng.uniform(0.5, 4.0))
            elif await self._aim(point):
                self.figures.points[point] += 1
                self.figures.dangerous_kills += 1
            self.kill()
            self.adyen.down = self.adyen.hold_next = False
            self.cpo.state.down = False
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))
            await self.daemon_up()
            self.figures.redelivered += await self.adyen.redeliver()
        self.adyen.losing, self.adyen.state.variants = False, set()

    async def _aim(self, point: str) -> bool:
        """Wait (at most 30 s) for ``point``; False: it did not come, the kill is at random."""
        adyen = self.adyen
        settled = self._count(SETTLED)
        received = self._received()  # one may be under way: the point is a new one
        adyen.held.clear()
        adyen.webhook_out.clear()
        adyen.down, adyen.hold_next = point == "stored", point == "sent"
        self.cpo.state.down = point == "applied"
        if point == "received":
            adyen.state.variants.add("slow")
        checks: dict[str, Callable[[], bool]] = {
            "stored": lambda: self._count(QUEUED) > 0,
            "sent": adyen.held.is_set,
            "received": lambda: bool(self._received() - received),
            "webhook": adyen.webhook_out.is_set,
            "applied": lambda: self._count(SETTLED) > settled,
        }
        try:
            async with asyncio.timeout(30):
                await self._until(checks[point])
        except TimeoutError:
            return False
        if point == "webhook":  # a few ms on: before it is stored, after, or after [accepted]
            await asyncio.sleep(self.rng.uniform(0.0, 0.03))
        return True

    async def _quiet(self, sessions: bool) -> None:
        """After the kills: lost webhooks delivered late, unaccepted ones again, then a bounded
        wait for every modification, session and upstream message (``check`` lists the rest)."""
        if sessions:
            last = max((when for when, _ in self.adyen.lost), default=0.0)
            await asyncio.sleep(last + DEADLINE_S - time.monotonic())  # the deadline first
            self.adyen.losing = False
            self.figures.late += await self.adyen.deliver_late()
            self.figures.redelivered += await self.adyen.redeliver()
            await self.adyen.settle()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LATE_WAIT_S):
                await self._until(lambda: self._count(UNSETTLED) == 0)
                await super()._quiet(sessions=False)

    async def _terminals_settled(self, limit_s: float = 0.0) -> None:
        """Nothing more, nor an end of day: the holds settle at the acquirer (``_quiet``)."""

    async def end_of_day(self) -> None:
        pass

    def check(self) -> None:
        f = self.figures
        f.webhooks = self.adyen.state.webhooks_sent
        rows = self._stored_rows()
        db = self.dir / "evpay.sqlite3"
        mods = _query(
            db, "SELECT command_key, payment_reference, status FROM acquirer_modifications"
        )
        ours = {idempotency_key(str(k)) for k, _, _ in mods}
        f.violations += [f"{k} confirmed on no webhook" for (k,) in _query(db, UNPROVEN)]
        psps: dict[str, set[str]] = defaultdict(set)  # session -> the payments it modified
        for key, psp, status in mods:
            named = split_key(str(key))
            if named is not None and psp:
                psps[named[0]].add(str(psp))
            if status in ("queued", "received"):
                f.findings.append(f"modification {key} left {status}")
        applied = self.adyen.state.applied
        f.modifications = len(applied)
        f.by_kind = Counter(str(m["what"]) for m in applied)
        for key, n in Counter(str(m["key"]) for m in applied).items():
            if n != 1 or key not in ours:
                f.violations.append(f"idempotency key {key}: applied {n}x, ours: {key in ours}")
        captured: Counter[str] = Counter()
        refunded: Counter[str] = Counter()
        ceiling: dict[str, int] = {}
        for tid, txn in self.poi.ledger.items():
            if txn.kind == "reservation":
                ceiling[tid.rpartition(".")[2]] = int(txn.amount * 100)
        closed: set[str] = set()
        captures: Counter[str] = Counter()
        for what, psp, minor, failed in self.adyen.ledger:
            if what == "amountUpdates":
                ceiling[psp] = max(ceiling.get(psp, 0), minor)
            elif what == "captures":
                captures[psp] += 1
                if minor > ceiling.get(psp, 0):
                    f.violations.append(f"payment {psp}: captured {minor} above {ceiling.get(psp)}")
                if not failed:
                    captured[psp] += minor
                    closed.add(psp)
            elif what == "refunds":
                refunded[psp] += minor
            else:
                closed.add(psp)
        f.violations += [f"payment {p}: {n} captures" for p, n in captures.items() if n > 1]
        owned: set[str] = set()
        for row in rows:
            data, sid = row["data"], row["id"]
            f.sessions += 1
            f.completed += row["state"] == "completed"
            if not row["final"]:
                f.violations.append(f"session {sid} is left {row['state']}")
            at_acquirer = sum(captured[p] for p in psps[sid])
            text = f"session {sid} ({row['state']}) captured {data.get('captured_minor', 0)}"
            facs = self.cpo.state.facs  # a corrected FAC (``-C``) supersedes the first
            fac = facs.get(f"{sid[:34]}-C") or facs.get(sid[:36]) or {}
            success = fac.get("capture_status_code") in ("SUCCESS", "PARTIAL_SUCCESS")
            said = gross_minor(fac["total_costs"]) if success else 0
            wrong = []
            if data.get("captured_minor", 0) != at_acquirer:
                wrong.append(f"{text}, the acquirer's ledger {at_acquirer}")
            if fac and (success != bool(at_acquirer) or said != at_acquirer):
                wrong.append(f"session {sid}: FAC {fac['capture_status_code']} {said}")
            if data.get("refunded_minor", 0) != sum(refunded[p] for p in psps[sid]):
                wrong.append(f"session {sid} refunded {data.get('refunded_minor')}")
            if row["state"] == "capture_unconfirmed":
                f.unconfirmed_sessions += 1
                f.findings.append(f"{text}, still unconfirmed; the acquirer has {at_acquirer}")
            elif any(CONTRADICTED in d and UNDONE not in d for d in data.get("discrepancies", ())):
                # not undone (still settling, a refund's): a discrepancy for a person, a finding
                f.contradicted += 1
                f.findings += [f"{w} (CAPTURE_FAILED after CAPTURE, a discrepancy)" for w in wrong]
                owned.update(psps[sid])
            else:  # CAPTURE_FAILED after a booked CAPTURE is undone: the books agree again
                f.contradicted += any(UNDONE in d for d in data.get("discrepancies", ()))
                f.violations += wrong
            for hold in data.get("holds", []):
                tid = hold["ref"].rpartition("@")[0] or hold["ref"]
                if hold["status"] in ("open", "unconfirmed", "lapsed") or data.get("owed_minor"):
                    owned.add(tid.rpartition(".")[2])
        f.captured_minor = sum(captured.values())
        f.fac_posts = len(self.cpo.state.fac_posts)
        f.holds = len(ceiling)
        by_reference = f.by_kind["technicalCancel"]
        left = [p for p in ceiling if p not in closed and p not in owned]
        if len(left) > by_reference:  # a cancel by merchant reference names no payment
            f.violations += [f"hold {p} at the POI is left open, owned by no session" for p in left]
        elif left:
            f.findings.append(f"{len(left)} hold(s) closed only by a cancel by reference")
        self.log.flush()
        secrets = [*self.cpo.state.tokens, API_KEY, HMAC_KEY, WEBHOOK_PASSWORD]
        hits = scan.scan_paths([db, self.dir / "daemon.log"], secrets=secrets)
        f.violations += [f"card data or a secret: {h}" for h in hits]


def run(size: str, seed: int, workdir: Path | None = None) -> AcquirerFigures:
    if MOSQUITTO is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    kills, evses = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="acquirer-crash-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        campaign = AcquirerCampaign(where, seed, kills, evses)
        asyncio.run(campaign.run())
        return campaign.figures


def describe(f: AcquirerFigures) -> str:
    points = ", ".join(f"{n} {p}" for p, n in sorted(f.points.items()))
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(f.by_kind.items()))
    return (
        f"{f.kills} kills ({f.dangerous_kills} aimed: {points}), {f.plugged} EVs plugged in, "
        f"{f.sessions} sessions ({f.completed} completed, {f.unconfirmed_sessions} unconfirmed, "
        f"{f.contradicted} CAPTURE_FAILED after a booked CAPTURE), "
        f"{f.holds} holds at the POI, {f.modifications} modifications ({kinds}), "
        f"{f.captured_minor / 100:.2f} EUR captured, {f.webhooks} webhooks accepted "
        f"({f.redelivered} redelivered after a kill, {f.late} lost batches delivered late), "
        f"{f.fac_posts} FAC POSTs, {f.seconds:.0f} s; {len(f.violations)} violation(s), "
        f"{len(f.findings)} open finding(s)"
    )
