"""Acquirer crash: the real daemon SIGKILLed around each online modification and webhook.

The crash campaign's site with an Adyen terminal: a nexo POI simulator (Adyen JSON) authorises,
and top-ups, captures and releases go to the simulated Checkout API (``evpay simulate
acquirer``'s), whose signed webhooks come back to the daemon's OCPI listener. All but the daemon
lives here and survives its deaths: the POI, the acquirer (its ledger, its webhooks under way),
the charger firmware on a real mosquitto plugging EVs in again and again, the CPO. Between kills
the acquirer shows a random one of its variants: slow, duplicated or lost webhooks, capture
failed after received, response lost after applied. Lost webhooks are delivered late, after
their deadline, once the kills are over; a webhook the dead daemon did not accept is sent again
after the next start (Adyen retries for days).

Kills land at random and at the dangerous points, aimed from the acquirer's side and the store:
``stored`` (the acquirer answers 503: queued, never taken), ``sent`` (held at the acquirer,
applied or not, the answer unread), ``received`` (201 stored, the webhook slowed), ``webhook``
(a webhook POST under way: stored or not, ``[accepted]`` or not), ``applied`` (the CPO down: a
session settled by a webhook, its FAC not yet sent).

Then the books: one modification per idempotency key, each the store's; at most one capture
per payment, none above what was authorised; the store's captured and refunded amounts are the
acquirer's ledger; no FAC contradicts it; no hold at the POI is open that no session owns; no
secret or card number in the database or the logs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.fernet import Fernet

from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from firmware_bridge.sim import ChargerSimulator
from gateway.acquirer.adyen_requests import idempotency_key
from gateway.acquirer.sim import AdyenSimulator, SimState
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.runtime.acquirer_runner import split_key
from tests.acquirer.rig import API_KEY, HMAC_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER
from tests.acquirer.test_crash_acquirer import _query
from tests.acquirer.test_e2e_acquirer import CONFIG
from tests.campaigns import scan
from tests.campaigns.crash import Campaign, Figures, gross_minor
from tests.firmware_bridge.conftest import MOSQUITTO, Broker
from tests.helpers import free_port

# kills (at least), EVSEs on the one Adyen terminal
SIZES = {"small": (5, 1), "full": (100, 2)}
POINTS = ("stored", "sent", "received", "webhook", "applied")
MIXES = ((), ("slow",), ("duplicate",), ("lost",), ("capture_failed",), ("response_lost",))
DEADLINE_S = 6  # the webhook deadline: a lost webhook makes its capture unconfirmed this soon
SLOW_S = 1.5
LATE_WAIT_S = 60.0  # after the late deliveries, the bound on the wait for every outcome
CONTRADICTED = "after its success was booked"  # the engine's discrepancy, acquirer_runner.py
QUEUED = "SELECT count(*) FROM acquirer_modifications WHERE status = 'queued'"
RECEIVED = "SELECT count(*) FROM acquirer_modifications WHERE status = 'received'"
SETTLED = "SELECT count(*) FROM sessions WHERE final = 1"
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


class AimedAdyen(AdyenSimulator):
    """The simulated acquirer with the campaign's handles (down, a request held, lost and
    unaccepted webhooks kept) and its ledger of what each modification did to money."""

    def __init__(self, state: SimState, chance: Callable[[], float]) -> None:
        super().__init__(state)
        self.chance = chance
        self.down = self.hold_next = self.losing = False  # 503s; hold a request; keep webhooks
        self.held = asyncio.Event()
        self.lost: list[list[dict[str, Any]]] = []
        self.unaccepted: list[dict[str, Any]] = []
        self.webhook_out = asyncio.Event()
        self.ledger: list[tuple[str, str, int, bool]] = []  # what, payment, minor, failed

    async def _apply(self, request: web.Request, what: str, psp: str | None) -> web.StreamResponse:
        if self.down:
            return web.json_response({"status": 503, "message": "down"}, status=503)
        if not self.hold_next:
            return await super()._apply(request, what, psp)
        self.hold_next = False
        applied = self.chance() < 0.5  # the kill lands after the acquirer applied it, or before
        answer = await super()._apply(request, what, psp) if applied else None
        self.held.set()
        await asyncio.sleep(1.0)  # the daemon dies meanwhile: its answer is never read
        if answer is None:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        return answer

    def _webhooks(self, what: str, psp: str | None, body: dict[str, Any], answer: Any) -> None:
        failed = what == "captures" and "capture_failed" in self.state.variants
        payment = psp or str(body.get("paymentReference"))
        self.ledger.append((what, payment, int((body.get("amount") or {}).get("value", 0)), failed))
        super()._webhooks(what, psp, body, answer)

    async def _send_all(self, items: list[dict[str, Any]]) -> None:
        if self.losing:
            self.lost.append(items)
            return
        await super()._send_all(items)

    async def _deliver(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        self.webhook_out.set()
        given_up = self.state.webhooks_given_up
        await super()._deliver(session, payload)
        if self.state.webhooks_given_up > given_up:
            self.unaccepted.append(payload)

    async def redeliver(self) -> int:
        """Adyen's retry: every webhook the daemon did not accept, sent again."""
        payloads, self.unaccepted = self.unaccepted, []
        user = f"{self.state.webhook_user}:{self.state.webhook_password}".encode()
        auth = {"Authorization": "Basic " + base64.b64encode(user).decode()}
        async with aiohttp.ClientSession(headers=auth) as session:
            for payload in payloads:
                await self._deliver(session, payload)
        return len(payloads)

    async def deliver_late(self) -> int:
        batches, self.lost, self.losing = self.lost, [], False
        for items in batches:
            await super()._send_all(items)
        return len(batches)


class AcquirerCampaign(Campaign):
    def __init__(self, workdir: Path, seed: int, kills: int, evses: int) -> None:
        super().__init__(workdir, seed, kills, evses, short=True)
        self.figures: AcquirerFigures = AcquirerFigures()

    async def start(self) -> None:
        self.broker = Broker(self.dir)
        self.broker.start()
        self.cpo = CpoSimulator()
        await self.cpo.start()
        self.poi = NexoPoi(PoiConfig(encoding="adyen-json"))
        self.poi_runner, poi_port = await serve_nexo_poi(self.poi)
        listen, acq_port = free_port(), free_port()
        url = f"http://127.0.0.1:{listen}/acquirer/adyen/notifications"
        state = SimState(API_KEY, HMAC_KEY, "EVPayTest", url, WEBHOOK_USER, WEBHOOK_PASSWORD)
        state.slow_s = SLOW_S
        self.adyen = AimedAdyen(state, self.rng.random)
        await self.adyen.start("127.0.0.1", acq_port)
        self.charger = ChargerSimulator(self.broker.settings("charger"), self.evses)
        self.charger_stop = asyncio.Event()
        self.charger_task = asyncio.create_task(self.charger.run(self.charger_stop))
        text = CONFIG.format(
            db=self.dir / "evpay.sqlite3",
            poi=poi_port,
            acq=acq_port,
            api_key=API_KEY,
            hmac=HMAC_KEY,
            user=WEBHOOK_USER,
            password=WEBHOOK_PASSWORD,
            deadline=DEADLINE_S,
            versions=self.cpo.versions_url,
            token_a=self.cpo.state.token_a,
            fernet=Fernet.generate_key().decode(),
            listen=listen,
            evse="E1",
            strategy="incremental",
            terminal_extra="incremental = true",
        )
        evses = "".join(f'[[charger.evses]]\nid = "{e}"\nterminal = "a1"\n' for e in self.evses)
        charger = f"[charger]\nenabled = true\n{self.broker.toml()}\n{evses}"
        old = '[charger]\nenabled = true\nmode = "simulated"\n[[charger.evses]]\nid = "E1"\n'
        text = text.replace(old + 'terminal = "a1"\n', charger)
        assert charger in text
        self.config = self.dir / "gateway.toml"
        self.config.write_text(text, encoding="utf-8")

    async def close(self) -> None:
        self.charger_stop.set()
        await asyncio.gather(self.charger_task, return_exceptions=True)
        await self.adyen.stop()
        await self.poi_runner.cleanup()
        await self.cpo.stop()
        self.broker.stop()
        self.log.close()

    def _count(self, sql: str) -> int:
        found = _query(self.dir / "evpay.sqlite3", sql)
        return int(str(found[0][0])) if found else 0

    async def _until(self, check: Callable[[], bool]) -> None:
        while not check():
            await asyncio.sleep(0.01)

    async def _kills(self) -> None:
        rounds = 0
        while rounds < self.kills:
            rounds += 1
            mix = set(self.rng.choice(MIXES))
            self.adyen.losing = "lost" in mix
            self.adyen.state.variants = mix - {"lost"}
            aimed = rounds <= len(POINTS) or self.rng.random() < 0.5  # each point once, then half
            point = POINTS[(rounds - 1) % len(POINTS)] if aimed else None
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
        received = self._count(RECEIVED)
        adyen.held.clear()
        adyen.webhook_out.clear()
        adyen.down, adyen.hold_next = point == "stored", point == "sent"
        self.cpo.state.down = point == "applied"
        if point == "received":
            adyen.state.variants.add("slow")
        checks: dict[str, Callable[[], bool]] = {
            "stored": lambda: self._count(QUEUED) > 0,
            "sent": adyen.held.is_set,
            "received": lambda: self._count(RECEIVED) > received,
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
            await asyncio.sleep(DEADLINE_S)
            self.figures.late = await self.adyen.deliver_late()
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
            fac = self.cpo.state.facs.get(sid[:36]) or {}
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
            elif any(CONTRADICTED in d for d in data.get("discrepancies", ())):
                # CAPTURE_FAILED after the CAPTURE that was booked (and told the CPO): the engine
                # keeps the booking and records a discrepancy for a person (settlement.py's
                # ``contradicted``). An open finding, not a silent loss: the hold is the session's.
                f.contradicted += 1
                f.findings += [f"{w} (CAPTURE_FAILED after CAPTURE, a discrepancy)" for w in wrong]
                owned.update(psps[sid])
            else:
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
