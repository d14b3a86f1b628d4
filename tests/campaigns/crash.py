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
the store holds enough sessions. The full size's site closes each terminal's batch during the
run as a site does, the daemon's own daily end of day at the terminal's "night" (``nights.py``).
After the last kill the daemon runs until every session is
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
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimTerminal
from firmware_bridge.sim import ChargerSimulator, Plan
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.store import Store
from tests.campaigns.books import BookedHold, stored_ref, zvt_book
from tests.campaigns.crash_books import Figures as Figures
from tests.campaigns.crash_books import check, end_of_day
from tests.campaigns.crash_books import gross_minor as gross_minor
from tests.campaigns.crash_books import main_figures as main_figures
from tests.campaigns.crash_site import partitions, start_zvt_terminals, write_config
from tests.campaigns.moments import moment
from tests.campaigns.nights import Nights
from tests.firmware_bridge.conftest import MOSQUITTO, Broker
from tests.helpers import EVPAY, subprocess_env

# kills, EVSEs, short charges, sessions: at least that many kills, and the kills go on until the
# store holds at least that many sessions (the full size needs many sessions per kill: 32 EVSEs
# charging a few kWh in up to three meter values, instead of up to 14 kWh in 28)
SIZES = {"small": (6, 2, False, 0), "medium": (40, 2, False, 0), "full": (1000, 32, True, 5000)}
# The full size's ZVT site closes each terminal's batch once this many EVs plugged in at its
# EVSEs (nights.py): a batch stays within what BMP 60 counts (255 payments a card group; a
# session topped up at t1 is two), so that its totals stay evidence.
BATCH_EVERY = 200
PARTITIONS = {
    "small": 2,  # one CPO outage, one broker outage (the suite's time)
    "medium": 20,
    "full": 200,
}  # outages, alternately the CPO's and the broker's


class Campaign:
    PLEASE_WAIT = 2  # t2 repeats "please wait" while it authorises, as serial PTs in the field do
    # set up by start() (the site: crash_site.py)
    config: Path
    sims: dict[str, SimTerminal]
    tcp: asyncio.Server
    pty: PtyPort
    pty_serving: asyncio.Task[None]
    tty: Path

    def __init__(
        self,
        workdir: Path,
        seed: int,
        kills: int,
        evses: int,
        short: bool = False,
        sessions: int = 0,
        batch_every: int = 0,
    ) -> None:
        self.dir, self.rng, self.kills, self.short = workdir, random.Random(seed), kills, short
        self.nights = Nights(batch_every)  # the terminals' batches closed during the run
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
        write_config(self, devices)

    async def start_terminals(self) -> dict[str, str]:
        """The ZVT terminals: ``t1`` on TCP, ``t2`` on a pty; their device URLs by id."""
        return await start_zvt_terminals(self)

    def terminal_sections(self) -> str:
        """Terminals written out whole (``start_terminals`` then gives no device URL)."""
        return ""

    def book(self) -> list[BookedHold]:
        """Every hold in the terminals' own books."""
        closed = self.nights.closed
        return [
            h for name, sim in self.sims.items() for h in zvt_book(name, sim, closed.get(name, ()))
        ]

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
        # the daemon's daily end of day for each terminal in its night (nights.py)
        text = self.config.read_text(encoding="utf-8")
        self.config.write_text(self.nights.config(text), encoding="utf-8")
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
            await self.nights.morning(self.terminal_of[evse], self.stop_plugging)
            if self.stop_plugging.is_set():
                return
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
            self.nights.plugged_in(self.terminal_of[evse])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    while len(state.authorized) == authorized:
                        await asyncio.sleep(0.05)
            task = state.charging
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
            await asyncio.sleep(self.rng.uniform(0.05, 0.5))

    async def run(self) -> Figures:
        return await self._campaign(self._kills())

    async def run_partitions(self, cuts: int, broker: bool = True) -> Figures:
        return await self._campaign(partitions(self, cuts, broker))

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
        await moment(self)

    def after_kill(self) -> None:
        """A kill loses nothing the daemon gave the kernel (the power-cut campaign loses more)."""

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
        await end_of_day(self)

    def check(self) -> None:
        check(self)


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
        if site is Campaign and evses == SIZES["full"][1]:  # the nexo site has no such batch
            campaign.nights.every = BATCH_EVERY
        return asyncio.run(campaign.run())
