"""Power cut: the crash campaign's site, but each death of the daemon is a power cut.

The daemon runs under the power-cut VFS (``powercut_vfs.py``), which logs every write to the
database and its WAL that is not yet fsynced. At each cut the daemon is SIGKILLed and its files
are turned into what the disk could hold after the power went: the unsynced writes dropped, a
prefix or a random subset of them kept, or the last one torn into new, old and garbage sectors.
Before the daemon starts again on that image, a copy of it must pass SQLite's integrity check
and the journal's hash chain, and everything the gateway had acknowledged to the world must be
in it: every session the charger was told to start (its hold approved), every FAC the CPO
received. At the end the crash campaign's books are compared: the store, the terminals' own
ledgers and the CPO must agree.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

from gateway.errors import StoreError
from gateway.store import Store
from tests.campaigns.crash import Campaign, Figures, gross_minor
from tests.campaigns.powercut_vfs import arm, power_cut
from tests.firmware_bridge.conftest import MOSQUITTO

SIZES = {"small": (4, 2), "medium": (40, 2), "full": (300, 4)}  # cuts, EVSEs


class PowerCuts(Campaign):
    def __init__(self, workdir: Path, seed: int, cuts: int, evses: int) -> None:
        super().__init__(workdir, seed, cuts, evses)
        self.logs = workdir / "unsynced"
        self.models: Counter[str] = Counter()
        self.unsynced = self.reached = self.torn = self.checked = self.inside = 0

    def daemon_command(self) -> list[str]:
        return [sys.executable, "-m", "tests.campaigns.powercut_vfs", str(self.logs)]

    async def moment(self) -> None:
        """Half the cuts from inside: the daemon armed to lose its power right after one of its
        next writes (mid-commit, before the sync); half from outside, at the crash campaign's
        moments (most land between commits, where nothing is unsynced)."""
        assert self.daemon is not None
        if self.rng.random() >= 0.5:
            await super().moment()
            return
        arm(self.logs, self.rng.randint(1, 40))
        for _ in range(200):
            if self.daemon.poll() is not None:
                break
            await asyncio.sleep(0.05)
        (self.logs / "cut-after-writes").unlink(missing_ok=True)  # not reached: cut from outside

    def kill(self) -> None:
        assert self.daemon is not None
        if self.daemon.poll() is None:
            super().kill()
        elif self.daemon.returncode == -signal.SIGKILL:  # it cut its own power, as armed
            self.inside += 1
            self.figures.kills += 1
        else:
            self.figures.violations.append(
                f"the daemon died by itself (exit {self.daemon.returncode})"
            )

    def after_kill(self) -> None:
        cut = power_cut(self.dir / "evpay.sqlite3", self.logs, self.rng)
        self.models[cut.model] += 1
        self.unsynced += cut.unsynced
        self.reached += cut.reached
        self.torn += cut.torn
        self.check_image(
            f"cut {self.figures.kills} ({cut.model}, {cut.reached} of {cut.unsynced} unsynced writes kept)"
        )

    def check_image(self, which: str) -> None:
        """On a copy (the daemon must find the image as the cut left it): SQLite's integrity
        check, the journal, and everything acknowledged before the cut."""
        copy = self.dir / "image"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        for f in self.dir.glob("evpay.sqlite3*"):
            shutil.copy2(f, copy / f.name)
        violations = self.figures.violations
        try:  # read-write: the copy's WAL is recovered as the daemon's next start would
            store = Store.open(copy / "evpay.sqlite3")
        except StoreError as exc:
            violations.append(f"{which}: the image does not open: {exc}")
            return
        try:
            problem = store.integrity()
            report = store.verify_journal()
            sessions = {row["id"]: row["data"] for row in store.sessions(limit=1_000_000)}
        finally:
            store.close()
        if problem is not None:
            violations.append(f"{which}: integrity check: {problem}")
            return
        if not report.ok:
            violations.append(f"{which}: the journal does not verify: {report.findings[0].text}")
        for evse, state in self.charger.evses.items():
            for told in state.authorized:
                self.checked += 1
                data = sessions.get(str(told["session_id"]))
                if data is None or not data.get("holds"):
                    violations.append(
                        f"{which}: {evse} was told to charge for session {told['session_id']}, "
                        "which the image has no approved hold for"
                    )
        by_fac = {sid[:36]: data for sid, data in sessions.items()}
        for fac_id, fac in self.cpo.state.facs.items():
            self.checked += 1
            data = by_fac.get(fac_id)
            if data is None or data.get("captured_minor") != gross_minor(fac["total_costs"]):
                violations.append(
                    f"{which}: the CPO has FAC {fac_id} ({fac['total_costs']}); the image has "
                    f"{'no such session' if data is None else data.get('captured_minor')}"
                )


def run(size: str, seed: int, workdir: Path | None = None) -> tuple[Figures, PowerCuts]:
    if MOSQUITTO is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    cuts, evses = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="powercut-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        campaign = PowerCuts(where, seed, cuts, evses)
        return asyncio.run(campaign.run()), campaign


def describe(f: Figures, c: PowerCuts) -> str:
    models = ", ".join(f"{n} {m}" for m, n in sorted(c.models.items()))
    return (
        f"{f.kills} power cuts ({models}; {c.inside} mid-commit, {f.dangerous_kills} at a dangerous moment), "
        f"{c.unsynced} unsynced "
        f"writes at the cuts ({c.reached} reached the disk, {c.torn} torn), {c.checked} acknowledgements "
        f"checked in the images, {f.plugged} EVs plugged in, {f.sessions} sessions ({f.completed} completed), "
        f"{f.holds} holds, {f.captured_minor / 100:.2f} EUR captured ({f.unconfirmed} unconfirmed), {f.fac_posts} FAC POSTs, {f.seconds:.0f} s; "
        f"{len(f.violations)} violation(s)"
    )
