"""Crash: the real daemon SIGKILLed again and again while drivers charge and pay.

Everything but the daemon lives in this process and survives its deaths, as the real parts
do: two terminal simulators (``t1`` on TCP answering captures with the booked amount and
keeping an approval whose connection closed before it was acknowledged, ``t2`` on a pty with
serial framing answering with the released amount and reversing an approval nobody
acknowledged, as ZVT 2.2.8 says), each keeping its turnover store in a file; the charger firmware simulator on a real mosquitto, plugging an EV in at
each EVSE again and again (random energy, pace and power); the embedded CPO over loopback
HTTP. Half the EVSEs take a fixed hold, half a small one topped up as the charge goes (t1 adds
a hold with its own receipt, t2 raises the first). `evpay run` is a subprocess under a fake
systemd NOTIFY_SOCKET. It is killed with SIGKILL at random moments, half of them at one of
the dangerous ones: a terminal's approval (of a hold, a top-up, a capture or a release) sent
and its acknowledgement awaited — a few milliseconds on, so before the daemon read it, after
it stored it or after it acknowledged it; the charger just authorized (the approval may not be
stored yet); the charger just stopped (the capture is on the wire); a FAC POST just reached
the CPO (the outbox mark may not be written). Kills go on until there were enough of them and
the store holds enough sessions. After the last kill the daemon runs until every session is
final, the outbox is empty and every hold open at a terminal is a session's (the sweep
releases a hold made for a lost top-up), and stops cleanly. Then, from the store, the
terminals' own books and the CPO's records:

- no money moved without a session that records it: every hold the terminals booked belongs to
  a stored session whose capture equals what the terminal booked, and no stored capture lacks
  the terminal's booking (no capture doubled: a terminal books a hold once);
- every hold is captured or released at the terminal, or the session owes it visibly;
- every session is final; every completed session's FAC is at the CPO once, with its amount;
- the journal verifies; no full card number or secret is in the database or the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from drivers.sim.ports import PtyPort, serve_tcp
from drivers.sim.terminal import SimConfig, SimTerminal
from firmware_bridge.sim import ChargerSimulator, Plan
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.runtime.engine_host import EngineHost
from gateway.runtime.engine_setup import build_policy, build_terminals
from gateway.settings import load_settings
from gateway.store import Store
from tests.campaigns import scan
from tests.campaigns.books import BookedHold, stored_ref, zvt_book
from tests.firmware_bridge.conftest import MOSQUITTO, Broker
from tests.helpers import EVPAY, subprocess_env
from tests.site_rig import site_toml, upstream_toml

# kills, EVSEs, short charges, sessions: at least that many kills, and the kills go on until the
# store holds at least that many sessions (the full size needs many sessions per kill: 32 EVSEs
# charging a few kWh in up to three meter values, instead of up to 14 kWh in 28)
SIZES = {"small": (6, 2, False, 0), "medium": (40, 2, False, 0), "full": (1000, 32, True, 5000)}
PARTITIONS = {
    "small": 4,
    "medium": 20,
    "full": 200,
}  # outages, alternately the CPO's and the broker's


@dataclass
class Figures:
    kills: int = 0
    dangerous_kills: int = 0
    moments: Counter[str] = field(default_factory=Counter)  # the dangerous kills, by moment
    plugged: int = 0
    sessions: int = 0
    completed: int = 0
    captured_minor: int = 0
    booked_minor: int = 0  # what the terminals' own books say was booked
    holds: int = 0
    open_holds: int = (
        0  # still open at the terminals at the end (each owed visibly, or a violation)
    )
    fac_posts: int = 0
    unconfirmed: int = (
        0  # captures the terminal booked whose evidence never reached the gateway (owed, visibly)
    )
    unconfirmed_sessions: int = 0  # sessions that ended capture_unconfirmed (their FAC held)
    ends_of_day: int = 0  # terminals closed after the last kill
    unconfirmed_after_end_of_day: int = 0  # still unconfirmed once the totals were read
    partitions: list[str] = field(default_factory=list)  # what was cut, how long, how long to drain
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)


class Campaign:
    PLEASE_WAIT = 2  # t2 repeats "please wait" while it authorises, as serial PTs in the field do

    def __init__(
        self,
        workdir: Path,
        seed: int,
        kills: int,
        evses: int,
        short: bool = False,
        sessions: int = 0,
    ) -> None:
        self.dir, self.rng, self.kills, self.short = workdir, random.Random(seed), kills, short
        self.min_sessions = sessions
        self.evses = [f"E{i + 1}" for i in range(evses)]
        self.terminal_of = {e: "t1" if i % 2 == 0 else "t2" for i, e in enumerate(self.evses)}
        # Half the EVSEs (E2, E3, E6, E7, …) take a small hold and top it up as the charge goes:
        # t1 adds a hold with its own receipt, t2 raises the first one (both seen in the field).
        self.incremental = {e for i, e in enumerate(self.evses) if i % 4 in (1, 2)}
        self.approval_out = asyncio.Event()
        self.figures = Figures()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.log = (workdir / "daemon.log").open("ab")
        self.stop_plugging = asyncio.Event()

    # ---- the parts that survive --------------------------------------------------------------

    async def start(self) -> None:
        self.broker = Broker(self.dir)
        self.broker.start()
        self.cpo = CpoSimulator()
        await self.cpo.start()
        devices = await self.start_terminals()
        self.charger = ChargerSimulator(self.broker.settings("charger"), self.evses)
        self.charger_stop = asyncio.Event()
        self.charger_task = asyncio.create_task(self.charger.run(self.charger_stop))
        upstream = upstream_toml(self.cpo)  # our OCPI server on a free loopback port
        routes = ""
        for terminal in (
            "t1",
            "t2",
        ):  # each EVSE stays on its terminal; a route never lists no EVSE (= all)
            for incremental in (True, False):
                evses = [
                    e
                    for e, t in self.terminal_of.items()
                    if t == terminal and (e in self.incremental) == incremental
                ]
                if evses:
                    routes += (
                        f'[[routes]]\nid = "{terminal}-{"topup" if incremental else "fixed"}"\n'
                        f'terminals = ["{terminal}"]\nevses = {json.dumps(evses)}\n'
                        + ('strategy = "incremental"\n' if incremental else "")
                    )
        text = site_toml(
            self.dir / "evpay.sqlite3",
            devices,
            site="CRASH",
            evses=self.terminal_of,
            charger=self.broker.toml(),  # the gateway's user on the ACL'd broker
            pricing='fixed_hold = { EUR = "50.00" }\nhold_min = "1.00"\nincremental_initial = "1.00"\n'
            'incremental_step = "1.00"\nsafety_margin = "0.10"\n'
            "retry_max_s = 60",  # after 1,000 kills retries would wait 30 min; the end waits 180 s
            extra=self.terminal_sections() + upstream + routes,
            terminal_extra="incremental = true\n",
        )
        self.config = self.dir / "gateway.toml"
        self.config.write_text(text, encoding="utf-8")

    async def start_terminals(self) -> dict[str, str]:
        """The ZVT terminals: ``t1`` on TCP, ``t2`` on a pty; their device URLs by id."""
        self.sims = {
            "t1": SimTerminal(
                SimConfig(
                    password="123456",
                    card_wait_s=0.05,
                    echo="booked",
                    extensions="new_receipt",
                    state_path=self.dir / "t1.json",
                    result_ack_timeout_s=2.0,
                    on_result=self.approval_out.set,
                    unacked_on_close="keep",
                )
            ),
            "t2": SimTerminal(
                SimConfig(
                    password="123456",
                    card_wait_s=0.05,
                    echo="reversed",
                    extensions="same_receipt",
                    state_path=self.dir / "t2.json",
                    result_ack_timeout_s=2.0,
                    on_result=self.approval_out.set,
                    please_wait=self.PLEASE_WAIT,
                )
            ),
        }
        self.tcp = await serve_tcp("127.0.0.1", 0, lambda p: self.sims["t1"].serve(p, serial=False))
        self.pty = PtyPort()
        self.pty_serving = asyncio.create_task(self._serve_pty())
        self.tty = (
            self.dir / "tty-t2"
        )  # as udev names a serial adapter: the campaigns may re-plug it
        self.tty.unlink(missing_ok=True)
        self.tty.symlink_to(self.pty.slave_path)
        tcp_port = self.tcp.sockets[0].getsockname()[1]
        return {"t1": f"tcp://127.0.0.1:{tcp_port}", "t2": f"serial://{self.tty}"}

    def terminal_sections(self) -> str:
        """Terminals written out whole (``start_terminals`` then gives no device URL)."""
        return ""

    def book(self) -> list[BookedHold]:
        """Every hold in the terminals' own books."""
        return [h for name, sim in self.sims.items() for h in zvt_book(name, sim)]

    def secrets(self) -> list[str]:
        """What must appear in no log or database: the CPO's tokens, the terminals' secrets."""
        return [*self.cpo.state.tokens, "123456"]

    async def _serve_pty(self) -> None:
        """The serial terminal (the unplug campaign replaces it with one whose line is pulled)."""
        await self.sims["t2"].serve_line(self.pty)

    async def close(self) -> None:
        self.charger_stop.set()
        await asyncio.gather(self.charger_task, return_exceptions=True)
        await self.close_terminals()
        await self.cpo.stop()
        self.broker.stop()
        self.log.close()

    async def close_terminals(self) -> None:
        self.pty_serving.cancel()
        await asyncio.gather(self.pty_serving, return_exceptions=True)
        await self.pty.close()
        self.tcp.close()

    # ---- the daemon that dies ----------------------------------------------------------------

    def daemon_command(self) -> list[str]:
        return list(EVPAY)

    async def daemon_up(self) -> None:
        notify_path = self.dir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.setblocking(False)
        self.daemon = subprocess.Popen(
            [*self.daemon_command(), "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=self.log,
            env=subprocess_env(NOTIFY_SOCKET=str(notify_path)),
        )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(180):  # a bound on a hang: a start took over 60 s under load
                while b"READY=1" not in await loop.sock_recv(notify, 4096):
                    pass
        finally:
            notify.close()

    def kill(self) -> None:
        assert self.daemon is not None
        if self.daemon.poll() is not None:
            self.figures.violations.append(
                f"the daemon died by itself (exit {self.daemon.returncode})"
            )
            return
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(timeout=10)
        self.figures.kills += 1

    async def stop_daemon(self) -> None:
        assert self.daemon is not None
        self.daemon.terminate()
        code = await asyncio.to_thread(self.daemon.wait, 30)
        if code != 0:
            self.figures.violations.append(f"the daemon's clean stop exited {code}")

    # ---- the drivers ------------------------------------------------------------------------

    async def drive(self, evse: str) -> None:
        """One EV after another at ``evse``: plug in, charge what the plan says, leave."""
        state = self.charger.evses[evse]
        while not self.stop_plugging.is_set():
            authorized = len(state.authorized)
            plan = Plan(
                energy_wh=self.rng.choice([0, 2_000, 5_000, 9_000, 14_000]),
                step_wh=self.rng.choice([500, 1_000, 3_000]),
                interval_s=self.rng.uniform(0.03, 0.25),
            )
            if self.short:
                plan = Plan(
                    energy_wh=self.rng.choice([0, 1_000, 2_000, 3_000]),
                    step_wh=self.rng.choice([1_000, 3_000]),
                    interval_s=self.rng.uniform(0.02, 0.08),
                )
            await self.charger.plug(evse, plan=plan)
            self.figures.plugged += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    while len(state.authorized) == authorized:
                        await asyncio.sleep(0.05)
            task = state.charging
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
            await asyncio.sleep(self.rng.uniform(0.05, 0.5))

    MOMENTS = ("approval", "authorized", "stopped", "fac")

    async def _dangerous_moment(self, kind: str) -> None:
        """Wait for one of the moments a kill hurts most: a terminal's approval (of a hold, a
        top-up, a capture or a release) sent and its acknowledgement awaited (ZVT 2.2.8: the
        terminal reverses it if none comes); the charger just authorized; the charger just
        stopped (the capture under way); a FAC POST just received by the CPO."""
        authorized = {e: len(s.authorized) for e, s in self.charger.evses.items()}
        posts = len(self.cpo.state.fac_posts)
        charging = {e: s.charging for e, s in self.charger.evses.items()}
        self.approval_out.clear()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.01):
                    await self.approval_out.wait()
            if kind == "approval" and self.approval_out.is_set():
                # A few milliseconds on: the kill lands before the daemon read the result, after
                # it stored it, or after its acknowledgement, at random.
                await asyncio.sleep(self.rng.uniform(0.0, 0.03))
                return
            self.approval_out.clear()
            if kind == "fac" and len(self.cpo.state.fac_posts) > posts:
                return
            for e, s in self.charger.evses.items():
                if kind == "authorized" and len(s.authorized) > authorized[e]:
                    return
                if (
                    kind == "stopped"
                    and s.charging is not None
                    and charging[e] is s.charging
                    and s.charging.done()
                ):
                    await asyncio.sleep(self.rng.uniform(0.0, 0.3))
                    return

    async def run(self) -> Figures:
        return await self._campaign(self._kills())

    async def run_partitions(self, cuts: int, broker: bool = True) -> Figures:
        return await self._campaign(self._partitions(cuts, broker))

    async def _campaign(self, faults: Coroutine[Any, Any, None]) -> Figures:
        """Start everything, run the drivers while ``faults`` happen, let the site settle, stop
        the daemon cleanly and compare the books."""
        started = time.perf_counter()
        await self.start()
        try:
            await self.daemon_up()
            drivers = [asyncio.create_task(self.drive(e)) for e in self.evses]
            await faults
            self.stop_plugging.set()
            async with asyncio.timeout(180):
                await asyncio.gather(*drivers)
                await self._quiet(sessions=True)
            await self._terminals_settled()
            await self.stop_daemon()
            self.check()
            await self.end_of_day()
        finally:
            faults.close()  # never awaited when the start failed
            if self.daemon is not None and self.daemon.poll() is None:
                self.daemon.kill()
            await self.close()
        self.figures.seconds = time.perf_counter() - started
        return self.figures

    async def _kills(self) -> None:
        rounds = (
            0  # a daemon that died by itself is a violation, not a kill: bound the rounds anyway
        )
        while rounds < self.kills or (
            self._stored_sessions() < self.min_sessions and rounds < 10 * self.kills
        ):
            rounds += 1
            await self.moment()
            self.kill()
            self.after_kill()
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))
            await self.daemon_up()

    async def moment(self) -> None:
        """Wait for the next kill: half the time for a dangerous moment, else a random while."""
        if self.rng.random() < 0.5:
            kind = self.rng.choice(self.MOMENTS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._dangerous_moment(kind)
                    self.figures.dangerous_kills += 1
                    self.figures.moments[kind] += 1
        else:
            await asyncio.sleep(self.rng.uniform(0.1, 2.5))

    def after_kill(self) -> None:
        """A kill loses nothing the daemon gave the kernel (the power-cut campaign loses more)."""

    async def _partitions(self, cuts: int, broker: bool) -> None:
        """Partitions instead of kills: the CPO unreachable (every request answered 503) or the
        MQTT broker gone, for a few seconds each; after each uplink cut, how long the backlog
        took to drain."""
        for i in range(cuts):
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            outage = self.rng.uniform(2.0, 6.0)
            if i % 2 == 0 or not broker:
                self.cpo.state.down = True
                await asyncio.sleep(outage)
                self.cpo.state.down = False
                restored = time.perf_counter()
                async with asyncio.timeout(120):
                    await self._quiet(sessions=False)
                self.figures.partitions.append(
                    f"uplink cut {outage:.1f} s, backlog drained "
                    f"{time.perf_counter() - restored:.1f} s after"
                )
            else:
                self.broker.stop()
                await asyncio.sleep(outage)
                self.broker.start()
                self.figures.partitions.append(f"MQTT broker gone {outage:.1f} s")

    def _stored_rows(self) -> list[dict[str, Any]]:
        store = Store.open(self.dir / "evpay.sqlite3", read_only=True)
        try:
            return store.sessions(limit=1_000_000)
        finally:
            store.close()

    def _stored_sessions(self) -> int:
        return len(self._stored_rows()) if self.min_sessions else 0

    async def _quiet(self, sessions: bool) -> None:
        """Poll the store until nothing is left to send upstream and, with ``sessions``, every
        session is final."""
        while True:
            store = Store.open(self.dir / "evpay.sqlite3", read_only=True)
            try:
                left = store.outbox.backlog().pending + (
                    store.count_open_sessions() if sessions else 0
                )
            finally:
                store.close()
            if not left:
                return
            await asyncio.sleep(0.1)

    async def _terminals_settled(self, limit_s: float = 90.0) -> None:
        """Wait, at most ``limit_s``, until every hold open at a terminal is one a stored session
        holds open: a hold the terminal made for a top-up whose result was lost is no session's
        until the daemon's sweep (put off while holds are being made, then tried again every
        SWEEP_RETRY_S) releases it. What is still open then, ``check`` reports."""
        end = time.perf_counter() + limit_s
        while time.perf_counter() < end:
            owned = {
                (r["data"]["terminal"], stored_ref(h))
                for r in self._stored_rows()
                for h in r["data"].get("holds", [])
                if h["status"] == "open"
            }
            if all((h.terminal, h.ref) in owned for h in self.book() if h.state == "open"):
                return
            await asyncio.sleep(0.5)

    # ---- the books ---------------------------------------------------------------------------

    async def end_of_day(self) -> None:
        """After the books are compared: each terminal's end of day as the daemon's runner makes
        it (06 50, then the host stores the batch and decides the unconfirmed captures by its
        totals), with the daemon stopped. Counted: the sessions still unconfirmed after it; and
        every outcome it released must agree with what the terminal booked."""
        booked = {  # before the end of day closes the terminals' batches
            (h.terminal, h.ref): h.booked for h in self.book() if h.state == "booked"
        }
        settings = load_settings(self.config)
        store = Store.open(self.dir / "evpay.sqlite3")
        try:
            host = EngineHost(store, build_policy(settings), lambda: datetime.now(UTC))
            before = {r["id"] for r in store.sessions(limit=1_000_000)}
            for name, terminal in build_terminals(settings).items():
                try:
                    async with asyncio.timeout(30):
                        await terminal.connect()
                        result = await terminal.end_of_day()
                finally:
                    await terminal.close()
                if result.approved:
                    host.record_end_of_day(name, result, "EUR")
                    self.figures.ends_of_day += 1
            rows = store.sessions(limit=1_000_000)
            outcomes = {
                str(m.payload["session_id"]): m.payload
                for m in store.outbox.list(kind="session.outcome", limit=1_000_000)
            }
        finally:
            store.close()
        for row in rows:
            assert row["id"] in before
            self.figures.unconfirmed_after_end_of_day += row["state"] == "capture_unconfirmed"
            data = row["data"]
            out = outcomes.get(row["id"])
            for hold in data.get("holds", []):
                took = booked.get((data["terminal"], stored_ref(hold)))
                if took and out is not None and out["state"] == "capture_failed":
                    self.figures.violations.append(
                        f"session {row['id']}: its outcome says capture_failed after the end of "
                        f"day, {data['terminal']} booked {took} on hold {stored_ref(hold)}"
                    )
                if out is not None and hold["captured_minor"] and not took:
                    self.figures.violations.append(
                        f"session {row['id']}: captured {hold['captured_minor']} after the end "
                        f"of day, {data['terminal']} booked nothing on hold {stored_ref(hold)}"
                    )

    def check(self) -> None:
        f = self.figures
        store = Store.open(self.dir / "evpay.sqlite3", read_only=True)
        try:
            rows = store.sessions(limit=1_000_000)
            report = store.verify_journal()
        finally:
            store.close()
        if not report.ok:
            f.violations.append(f"the journal does not verify: {report.findings[0].text}")
        stored: dict[tuple[str, str], tuple[str, dict[str, Any], dict[str, Any]]] = {}
        for row in rows:
            data = row["data"]
            f.sessions += 1
            if not row["final"]:
                f.violations.append(f"session {row['id']} is left {row['state']}")
            if row["state"] == "completed":
                f.completed += 1
            f.unconfirmed_sessions += row["state"] == "capture_unconfirmed"
            for hold in data.get("holds", []):
                key = (data["terminal"], stored_ref(hold))
                if key in stored and stored[key][0] != row["id"]:
                    f.violations.append(
                        f"sessions {stored[key][0]} and {row['id']} both hold {key[0]} {key[1]}"
                    )
                stored[key] = (row["id"], hold, data)
        booked_total = unconfirmed_total = 0
        for tx in self.book():
            terminal = tx.terminal
            f.holds += 1
            found = stored.get((terminal, tx.ref))
            if tx.state == "booked":
                booked_total += tx.booked
                fac = self.cpo.state.facs.get(found[0][:36]) if found is not None else None
                if fac is not None and fac.get("capture_status_code") == "FAILED":
                    f.violations.append(  # the CPO would charge the driver again
                        f"session {found[0] if found else '?'}: the FAC says FAILED, "
                        f"{terminal} booked {tx.booked} on hold {tx.ref}"
                    )
                if found is None:
                    f.violations.append(
                        f"{terminal} booked {tx.booked} on hold {tx.ref}: no session records it"
                    )
                elif found[1]["status"] == "unconfirmed" and found[1]["target_minor"] == tx.booked:
                    f.unconfirmed += 1  # no evidence reached the gateway: owed, visibly
                    unconfirmed_total += tx.booked
                elif found[1]["captured_minor"] != tx.booked:
                    f.violations.append(
                        f"session {found[0]} captured {found[1]['captured_minor']} on {terminal} "
                        f"hold {tx.ref}, the terminal booked {tx.booked}"
                    )
            elif tx.state == "open":
                f.open_holds += 1
                owed = found is not None and (
                    found[2].get("owed_minor") or found[1]["status"] in ("lapsed", "unconfirmed")
                )
                if not owed:
                    f.violations.append(
                        f"{terminal} hold {tx.ref} ({tx.amount}) is left open, owed by nobody"
                    )
            elif found is not None and found[1]["captured_minor"]:
                f.violations.append(
                    f"session {found[0]} claims a capture on {terminal} hold {tx.ref}, "
                    "which the terminal released"
                )
        f.captured_minor = sum(h["captured_minor"] for _, h, _ in stored.values())
        f.booked_minor = booked_total
        if f.captured_minor + unconfirmed_total != booked_total:
            f.violations.append(
                f"the store captured {f.captured_minor} in all (and {unconfirmed_total} unconfirmed), "
                f"the terminals booked {booked_total}"
            )
        f.fac_posts = len(self.cpo.state.fac_posts)
        for sid, _hold, data in stored.values():
            if data["state"] == "completed" and data.get("captured_minor"):
                fac = self.cpo.state.facs.get(sid[:36])
                if fac is None:
                    f.violations.append(f"session {sid}: no FAC at the CPO")
                elif _gross_minor(fac["total_costs"]) != data["captured_minor"]:
                    f.violations.append(
                        f"session {sid}: the FAC says {fac['total_costs']}, "
                        f"the session captured {data['captured_minor']}"
                    )
        self.log.flush()
        hits = scan.scan_paths(
            [self.dir / "evpay.sqlite3", self.dir / "daemon.log"],
            secrets=self.secrets(),
        )
        f.violations += [f"card data or a secret: {h}" for h in hits]


def run_partitions(
    size: str, seed: int, workdir: Path | None = None, broker: bool = True
) -> Figures:
    if MOSQUITTO is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    cuts = PARTITIONS[size]
    with tempfile.TemporaryDirectory(prefix="partition-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        return asyncio.run(Campaign(where, seed, 0, 2).run_partitions(cuts, broker))


def _gross_minor(price: dict[str, Any]) -> int:
    """An OCPI 2.3.0 Price (before_taxes and the taxes' amounts) in cents."""
    gross = Decimal(str(price["before_taxes"])) + sum(
        Decimal(str(t["amount"])) for t in price.get("taxes") or ()
    )
    return int(gross * 100)


def run(
    size: str,
    seed: int,
    workdir: Path | None = None,
    kills: int | None = None,
    site: Callable[..., Campaign] = Campaign,
) -> Figures:
    """``kills``: the full size's site with that many kills (and no minimum of sessions), for a
    run that must end by a given time; ``site``: the campaign's site (``nexo_site``'s)."""
    if MOSQUITTO is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    n, evses, short, sessions = SIZES[size] if kills is None else (kills, *SIZES["full"][1:3], 0)
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        campaign = site(where, seed, n, evses, short=short, sessions=sessions)
        return asyncio.run(campaign.run())


def main_figures(f: Figures) -> str:
    if f.partitions:
        return (
            f"{len(f.partitions)} partitions ({'; '.join(f.partitions[:4])}{' …' if len(f.partitions) > 4 else ''}), "
            f"{f.plugged} EVs plugged in, {f.sessions} sessions ({f.completed} completed), {f.holds} holds, "
            f"{f.captured_minor / 100:.2f} EUR captured, {f.fac_posts} FAC POSTs, {f.seconds:.0f} s; "
            f"{len(f.violations)} violation(s)"
        )
    moments = ", ".join(f"{n} {k}" for k, n in sorted(f.moments.items()))
    return (
        f"{f.kills} kills ({f.dangerous_kills} at a dangerous moment: {moments}), {f.plugged} EVs plugged in, "
        f"{f.sessions} sessions ({f.completed} completed), {f.holds} holds at the terminals "
        f"({f.open_holds} left open), "
        f"{f.captured_minor / 100:.2f} EUR captured (the terminals booked "
        f"{f.booked_minor / 100:.2f}), {f.unconfirmed} captures unconfirmed "
        f"({f.unconfirmed_sessions} sessions capture_unconfirmed, "
        f"{f.unconfirmed_after_end_of_day} after {f.ends_of_day} ends of day), "
        f"{f.fac_posts} FAC POSTs, "
        f"{f.seconds:.0f} s; {len(f.violations)} violation(s)"
    )
