"""The crash campaign's site on nexo terminals (``--protocol nexo [--encoding xml|adyen-json]``).

The same site as ``crash.py`` (EVSEs, routes, half of them topping up, the CPO, the broker, the
daemon killed again and again), but its two terminals are nexo POI simulators
(``drivers/sim/nexo_poi.py``) on loopback: nexo 3.1 XML over HTTP, or Adyen's JSON over HTTPS
with the key's encryption and the throw-away certificate pinned. ``t2`` answers slowly, so kills
land inside its exchanges. Each POI keeps its ledger in a file beside the store; the end check
reads it as it reads a ZVT terminal's book (``books.NexoBook``): 0 open reservations owed by
nobody, no reservation completed twice or claimed by two sessions, and the store's captures
equal to what the POI booked, hold by hold.

The dangerous "approval" moment is the POI's money answer just made (a reservation, top-up,
completion or reversal done, its HTTP answer on its way): a kill then lands before the daemon
read it, after it stored it, or after the driver forgot its ServiceID, at random. A restarted
driver asks TransactionStatus for every ServiceID it had in flight before anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from drivers.nexo import messages as nm
from drivers.nexo.messages import Message
from drivers.nexo.model import Result
from drivers.nexo.wire import PATHS, Encoding
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from tests.campaigns import crash
from tests.campaigns.books import BookedHold, NexoBook
from tests.campaigns.crash import Campaign, Figures
from tests.firmware_bridge.conftest import MOSQUITTO
from tests.nexo.conftest import KEY, self_signed
from tests.site_rig import nexo_keys

SLOW_S = 0.05  # t2 answers this late: a POI whose host takes its time


@dataclass
class CuedPoi(NexoPoi):
    """A POI that tells the campaign each time it has just acted on money (its answer about to
    go out): the cue for a kill at the dangerous moment."""

    cue: asyncio.Event | None = None

    def handle(self, request: Message) -> Message | None:
        reply = super().handle(request)
        if self.cue is not None and _acted_on_money(reply):
            self.cue.set()
        return reply


def _acted_on_money(reply: Message | None) -> bool:
    body = reply.body if reply is not None else None
    if not isinstance(body, (nm.PaymentResponse, nm.ReversalResponse)):
        return False
    return body.response.result is not Result.FAILURE


class NexoCampaign(Campaign):
    def __init__(self, workdir: Path, seed: int, kills: int, evses: int, **kw: Any) -> None:
        self.encoding: Encoding = kw.pop("encoding", "xml")
        super().__init__(workdir, seed, kills, evses, **kw)

    async def start_terminals(self) -> dict[str, str]:
        tls, pin = self_signed(self.dir) if self.encoding == "adyen-json" else (None, b"")
        self.pin = pin.hex()
        self.pois: dict[str, NexoPoi] = {}
        self.runners: list[web.AppRunner] = []
        self.urls: dict[str, str] = {}
        for name, delay in (("t1", 0.0), ("t2", SLOW_S)):
            poi = CuedPoi(
                PoiConfig(
                    encoding=self.encoding,
                    poi_id=f"POI-{name.upper()}",
                    key=KEY if tls else None,
                    delay_s=delay,
                    state_path=self.dir / f"poi-{name}.json",
                ),
                cue=self.approval_out,
            )
            runner, port = await serve_nexo_poi(poi, tls=tls)
            self.pois[name], self.runners = poi, [*self.runners, runner]
            scheme = "https" if tls else "http"
            self.urls[name] = f"{scheme}://127.0.0.1:{port}{PATHS[self.encoding]}"
        self.books = {
            name: NexoBook(name, poi, self.dir / f"nexo-{name}.json")
            for name, poi in self.pois.items()
        }
        return {}

    def terminal_sections(self) -> str:
        blocks = ""
        for name, url in self.urls.items():
            poi_id = self.pois[name].config.poi_id
            key = KEY if self.encoding == "adyen-json" else None
            blocks += f'[[terminals]]\nid = "{name}"\ndevice = "{url}"\nincremental = true\n'
            blocks += nexo_keys(
                self.encoding, sale_id="EVPAY-CRASH", poi_id=poi_id, pin=self.pin, key=key
            )
        return blocks

    def after_kill(self) -> None:
        for book in self.books.values():
            book.learn()  # the driver's names for the POI's transactions, before they age out

    def book(self) -> list[BookedHold]:
        return [h for b in self.books.values() for h in b.holds()]

    def check(self) -> None:
        super().check()
        for b in self.books.values():
            self.figures.violations += [f"money outside a hold: {m}" for m in b.other_money()]

    def secrets(self) -> list[str]:
        return [*self.cpo.state.tokens, KEY.passphrase]

    async def close_terminals(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


def run(
    size: str, seed: int, workdir: Path | None, encoding: Encoding, kills: int | None = None
) -> Figures:
    """The crash campaign (``crash.run``) on nexo POIs in ``encoding``."""
    return crash.run(size, seed, workdir, kills, functools.partial(NexoCampaign, encoding=encoding))


class NexoUnplugs(NexoCampaign):
    """The unplug campaign on nexo: the HTTP connection of one money exchange dropped, before
    the POI acted (the request never took effect) or after (its answer lost), on one of the two
    POIs at a time; the daemon runs on and must find out by TransactionStatus. The same
    figures as ``unplug.Unplugs`` (``cuts``, ``unreached``), so ``unplug.describe`` reads both."""

    POINTS = ("before the POI acted", "after the POI acted")

    def __init__(self, workdir: Path, seed: int, armed: int, encoding: Encoding) -> None:
        super().__init__(workdir, seed, 0, 2, encoding=encoding)
        self.armed = armed
        self.cuts: Counter[tuple[str, str, str]] = Counter()
        self.unreached: Counter[tuple[str, str, str]] = Counter()

    async def run_unplugs(self) -> Figures:
        return await self._campaign(self._unplugs())

    async def _unplugs(self) -> None:
        points = [(t, p) for t in ("t1", "t2") for p in self.POINTS]
        order: list[tuple[str, str]] = []
        for _ in range(self.armed):
            if not order:
                order = self.rng.sample(points, len(points))
            terminal, point = order.pop()
            config = self.pois[terminal].config
            if point == self.POINTS[0]:
                config.drop_requests = 1
            else:
                config.lose_answers = 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(12):
                    while _armed(config):
                        await asyncio.sleep(0.02)
            what = (terminal, "money command", f"connection dropped {point}")
            if _armed(config):
                config.drop_requests = config.lose_answers = 0
                self.unreached[what] += 1
                continue
            self.cuts[what] += 1
            await asyncio.sleep(self.rng.uniform(0.5, 2.5))


def _armed(config: PoiConfig) -> bool:
    """The armed cut has not happened yet (read through a call: the POI clears it)."""
    return config.drop_requests > 0 or config.lose_answers > 0


def run_unplugs(
    armed: int, seed: int, workdir: Path | None, encoding: Encoding
) -> tuple[Figures, NexoUnplugs]:
    if MOSQUITTO is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    with tempfile.TemporaryDirectory(prefix="unplug-nexo-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        campaign = NexoUnplugs(where, seed, armed, encoding)
        return asyncio.run(campaign.run_unplugs()), campaign
