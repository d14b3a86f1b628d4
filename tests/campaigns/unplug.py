"""Unplug: the terminal's line cut in the middle of its exchanges with the real daemon.

The crash campaign's site (``t1`` on TCP echoing the booked amount, ``t2`` on a pty with
serial framing echoing the released one), the daemon left running. One point at a time, a
terminal is told to cut its line just before its n-th message answering a command: before
its acknowledgement (it did nothing), after it (the card is being read), before the result
(the hold is made or the booking done, and the gateway never hears it), before the
completion. The cut is, on TCP, a reset (RST); on the serial line either a cable pulled out
(silence, and whatever the gateway writes meanwhile is lost) or the USB adapter pulled
(the device disappears; it comes back under its udev name on a new pty). The gateway must
find out from the terminal what happened; at the end the store, the terminals' own books
and the CPO must agree, as in the crash campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections import Counter
from pathlib import Path
from typing import Protocol

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig
from drivers.zvt.constants import Command
from tests.campaigns.crash import Campaign, Figures
from tests.firmware_bridge.conftest import MOSQUITTO

# What this site's gateway sends (it captures with a partial reversal; book total is a setting
# this site does not use): the hold, the capture, the release of an unused hold, and the
# repeat receipt it asks for when a result was lost.
COMMANDS = {
    Command.PRE_AUTHORISATION: "pre-auth",
    Command.PARTIAL_REVERSAL: "partial reversal",
    Command.PRE_AUTH_REVERSAL: "pre-auth reversal",
    Command.REPEAT_RECEIPT: "repeat receipt",
}
STEPS = 4  # the terminal's messages answering a command: 0 its acknowledgement, then status, result, completion
SIZES = {
    "small": 3,
    "medium": 64,
    "full": 400,
}  # cuts armed, cycling over every (terminal, command, step)


def cut_pending(config: SimConfig) -> bool:
    """The armed cut has not happened yet (the simulator clears ``unplug_at`` when it cuts).
    Read through a call: a type checker would keep the value just assigned."""
    return config.unplug_at is not None


class Unplugs(Campaign):
    PLEASE_WAIT = 0  # the cut points count the messages of a plain exchange (STEPS)

    def __init__(self, workdir: Path, seed: int, armed: int) -> None:
        super().__init__(workdir, seed, 0, 2)
        self.armed = armed
        self.cuts: Counter[tuple[str, str, str]] = Counter()  # (terminal, command, step) cut
        self.unreached: Counter[tuple[str, str, str]] = (
            Counter()
        )  # the exchange ended first, or never came
        self.serial_cut = "cable"

    async def run_unplugs(self) -> Figures:
        return await self._campaign(self._unplugs())

    async def _serve_pty(self) -> None:
        """The serial terminal: after a cut, the cable comes back after a while (what was sent
        meanwhile is lost), or the USB adapter is plugged in again as a new device."""
        while True:
            cut = await self.sims["t2"].serve(self.pty, serial=True)
            if cut and self.serial_cut == "cable":
                await asyncio.sleep(self.rng.uniform(0.3, 2.0))
                self.pty.discard()
            elif cut:
                await self.pty.close()
                await asyncio.sleep(self.rng.uniform(0.3, 2.0))
                self.pty = PtyPort()
                self.tty.unlink()
                self.tty.symlink_to(self.pty.slave_path)
            await asyncio.sleep(0.05)

    async def _unplugs(self) -> None:
        commands = (
            list(COMMANDS)
            if self.armed > SIZES["small"]
            else [Command.PRE_AUTHORISATION, Command.PARTIAL_REVERSAL]
        )
        points = [(t, cmd, step) for t in ("t1", "t2") for cmd in commands for step in range(STEPS)]
        order: list[tuple[str, int, int]] = []
        for _ in range(self.armed):
            if not order:
                order = self.rng.sample(points, len(points))
            await self._cut(*order.pop())

    async def _cut(self, terminal: str, cmd: int, step: int) -> None:
        config = self.sims[terminal].config
        if terminal == "t2":
            # A cable pulled after the terminal's acknowledgement is silence: the gateway learns
            # of it only when ZVT's T4 (3 minutes) runs out. The small size (inside the suite's
            # time) pulls the USB adapter instead, which the gateway sees at once.
            small = self.armed <= SIZES["small"]
            self.serial_cut = "usb" if small and step > 0 else self.rng.choice(("cable", "usb"))
        config.unplug_at = (cmd, step)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(12):
                while cut_pending(config):
                    await asyncio.sleep(0.02)
        what = (
            terminal,
            COMMANDS[Command(cmd)],
            "its acknowledgement" if step == 0 else f"its message {step + 1}",
        )
        if cut_pending(config):
            config.unplug_at = None
            self.unreached[what] += 1
            return
        how = "TCP reset" if terminal == "t1" else f"serial {self.serial_cut}"
        self.cuts[(*what[:2], f"before {what[2]} ({how})")] += 1
        await asyncio.sleep(self.rng.uniform(0.5, 2.5))


def run(size: str, seed: int, workdir: Path | None = None) -> tuple[Figures, Unplugs]:
    if MOSQUITTO is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    with tempfile.TemporaryDirectory(prefix="unplug-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        campaign = Unplugs(where, seed, SIZES[size])
        return asyncio.run(campaign.run_unplugs()), campaign


class Cuts(Protocol):
    """What ``describe`` reads of an unplug campaign (ZVT's ``Unplugs`` or nexo's)."""

    cuts: Counter[tuple[str, str, str]]
    unreached: Counter[tuple[str, str, str]]


def describe(f: Figures, c: Cuts) -> str:
    per_command = Counter()  # type: Counter[str]
    for (_, command, _), n in c.cuts.items():
        per_command[command] += n
    kinds = ", ".join(f"{command} {n}" for command, n in sorted(per_command.items()))
    return (
        f"{sum(c.cuts.values())} lines cut mid-exchange ({kinds}; {len(c.cuts)} distinct points), "
        f"{sum(c.unreached.values())} armed cuts not reached, {f.plugged} EVs plugged in, {f.sessions} sessions "
        f"({f.completed} completed), {f.holds} holds, {f.captured_minor / 100:.2f} EUR captured ({f.unconfirmed} unconfirmed), "
        f"{f.fac_posts} FAC POSTs, {f.seconds:.0f} s; {len(f.violations)} violation(s)"
    )
