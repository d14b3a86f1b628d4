"""The terminal under test, built as the daemon builds it: its settings (the protocol's member of
the terminal settings union) through the driver registry, so the runner knows no protocol.

``--device sim`` puts the protocol's simulator in front of it: the ZVT terminal simulator on a
pty, or the nexo POI simulator on loopback HTTP (XML) that waits for a card as a terminal does
(``tap_required``). ``SimCard`` is how a scenario plays the card on either.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import TypeAdapter

from drivers.base import PaymentTerminal
from drivers.nexo.wire import PATHS
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.runtime import terminal_registry
from gateway.runtime.terminal_registry import BuildContext
from gateway.settings import TerminalSettings

TERMINAL: TypeAdapter[TerminalSettings] = TypeAdapter(TerminalSettings)
Outcome = Literal["approve", "decline"]


class SimCard(Protocol):
    """The simulator's side of a card at the terminal."""

    def present(self, outcome: Outcome) -> None: ...
    def withhold(self) -> None: ...  # the card never comes (until ``restore``)
    def restore(self) -> None: ...


@dataclass
class ZvtCard:
    sim: SimTerminal

    def present(self, outcome: Outcome) -> None:
        self.sim.config.outcomes.append(outcome)

    def withhold(self) -> None:
        self.sim.config.card_wait_s = 10.0

    def restore(self) -> None:
        self.sim.config.card_wait_s = 0.05


@dataclass
class NexoCard:
    poi: NexoPoi

    def present(self, outcome: Outcome) -> None:
        self.poi.config.decline += outcome == "decline"
        self.poi.tap()

    def withhold(self) -> None:
        """Nothing to do: the POI waits for a card that is not presented."""

    def restore(self) -> None:
        """Nothing to undo."""


@dataclass
class BenchDevice:
    terminal: PaymentTerminal
    card: SimCard | None  # None: a technician presents the card
    close: Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the command line says about the terminal (beyond its device)."""

    protocol: str = "zvt"
    password: str = "000000"  # noqa: S105 - ZVT's factory default; the runner reads the env
    capture_mode: str = "partial_reversal"
    charset: str = "cp437"
    poi_id: str = "POI-SIM-1"
    sale_id: str = "EVPAY-HIL"
    state_dir: Path | None = None  # nexo: where the driver keeps its state (default: a temp dir)


def settings_for(device: str, wanted: Wanted) -> TerminalSettings:
    """The terminal's settings as a site would write them, from what its protocol has."""
    fields = terminal_registry.driver(wanted.protocol).settings.model_fields
    offered: dict[str, Any] = {
        "poi_id": wanted.poi_id,
        "sale_id": wanted.sale_id,
        "capture_mode": wanted.capture_mode,
        "charset": wanted.charset,
        "password": {"value": wanted.password},
    }
    raw = {k: v for k, v in offered.items() if k in fields}
    return TERMINAL.validate_python(
        raw | {"id": "hil", "protocol": wanted.protocol, "device": device}
    )


async def open_device(
    device: str, wanted: Wanted, sim_config: SimConfig | None = None
) -> BenchDevice:
    """The terminal (and, for ``sim``, its simulator). ``sim_config``: the ZVT simulator's."""
    closers: list[Callable[[], Awaitable[Any]]] = []
    card: SimCard | None = None
    if device == "sim" and wanted.protocol == "nexo":
        poi = NexoPoi(PoiConfig(poi_id=wanted.poi_id, tap_required=True, card_wait_s=10.0))
        runner, port = await serve_nexo_poi(poi)
        closers.append(runner.cleanup)
        device, card = f"http://127.0.0.1:{port}{PATHS['xml']}", NexoCard(poi)
    elif device == "sim":
        pty = PtyPort()
        sim = SimTerminal(sim_config or SimConfig(password=wanted.password, card_wait_s=0.05))
        serving = asyncio.create_task(sim.serve_line(pty))

        async def stop() -> None:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await pty.close()

        closers.append(stop)
        device, card = f"serial://{pty.slave_path}", ZvtCard(sim)
    state_dir = wanted.state_dir
    if state_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="hil-")
        closers.append(lambda: asyncio.to_thread(scratch.cleanup))
        state_dir = Path(scratch.name)

    async def close_sims() -> None:
        for closer in reversed(closers):
            await closer()

    context = BuildContext(currency="EUR", state_dir=state_dir)
    try:
        terminal = terminal_registry.build(settings_for(device, wanted), context)
    except BaseException:
        await close_sims()
        raise

    async def close() -> None:
        await terminal.close()
        await close_sims()

    return BenchDevice(terminal, card, close)
