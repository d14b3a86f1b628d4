"""The crash campaign's kills: when each lands (half of them at a moment a kill hurts most)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.campaigns.crash import Campaign

MOMENTS = ("approval", "authorized", "stopped", "fac")


async def moment(c: Campaign) -> None:
    """Wait for the next kill: half the time for a dangerous moment, else a random while."""
    if c.rng.random() < 0.5:
        kind = c.rng.choice(MOMENTS)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await dangerous_moment(c, kind)
                c.figures.dangerous_kills += 1
                c.figures.moments[kind] += 1
    else:
        await asyncio.sleep(c.rng.uniform(0.1, 2.5))


async def dangerous_moment(c: Campaign, kind: str) -> None:
    """Wait for one of the moments a kill hurts most: a terminal's approval (of a hold, a
    top-up, a capture or a release) sent and its acknowledgement awaited (ZVT 2.2.8: the
    terminal reverses it if none comes); the charger just authorized; the charger just
    stopped (the capture under way); a FAC POST just received by the CPO."""
    authorized = {e: len(s.authorized) for e, s in c.charger.evses.items()}
    posts = len(c.cpo.state.fac_posts)
    charging = {e: s.charging for e, s in c.charger.evses.items()}
    c.approval_out.clear()
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.01):
                await c.approval_out.wait()
        if kind == "approval" and c.approval_out.is_set():
            # A few milliseconds on: the kill lands before the daemon read the result, after
            # it stored it, or after its acknowledgement, at random.
            await asyncio.sleep(c.rng.uniform(0.0, 0.03))
            return
        c.approval_out.clear()
        if kind == "fac" and len(c.cpo.state.fac_posts) > posts:
            return
        for e, s in c.charger.evses.items():
            if kind == "authorized" and len(s.authorized) > authorized[e]:
                return
            if (
                kind == "stopped"
                and s.charging is not None
                and charging[e] is s.charging
                and s.charging.done()
            ):
                await asyncio.sleep(c.rng.uniform(0.0, 0.3))
                return
