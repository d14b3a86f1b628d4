"""The engine worker's settings and shared state, in a few small typed parts instead of one flat
list of fields: what it knows of each terminal (``TerminalFacts``), how sessions start at the
site (``SiteRules``), which terminals' modifications go online (``OnlineModifications``) and what
the daemon reads while it runs (``WorkerStatus``). The queue and timers the worker alone touches
are its ``LoopState``, bounded by ``ENGINE_QUEUE_MAX``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Any

from gateway.payments import events as e
from gateway.payments.routing import Health, Route
from gateway.runtime.metrics import Metrics
from gateway.runtime.terminal_runner import Board
from gateway.settings import AcquirerSettings

# Events from outside waiting for the engine. A step takes about a millisecond and a site has
# tens of EVSEs, so this is minutes of a message storm; beyond it input is refused, not queued.
ENGINE_QUEUE_MAX = 1_000
# Results of commands sent, session timers and resumes are always taken: at most one each per
# open session, and a site has one open session per EVSE (plus the sweeps' orphans). Past this
# many the engine is broken, not busy: the worker fails and the supervisor restarts it (resume
# reads every open session from the store; a result lost so is an unknown outcome, asked again).
ENGINE_INTERNAL_MAX = 10_000
QUEUE_CAPACITY = ENGINE_QUEUE_MAX + ENGINE_INTERNAL_MAX

Queued = tuple[e.Event, Callable[[], None] | None]


@dataclass(frozen=True, slots=True)
class TerminalFacts:
    """What the worker knows of each terminal besides its driver, and each runner's timings."""

    devices: Mapping[str, str] = field(default_factory=dict)  # terminal -> device URL
    protocols: Mapping[str, str] = field(default_factory=dict)  # terminal -> "zvt", "nexo", …
    end_of_day_at: Mapping[str, time] = field(default_factory=dict)  # terminal -> site time
    end_of_day_retry_s: float = 300.0  # a transaction open at that time: try again this later
    probe_every_s: float = 60.0
    register_timeout_s: float = 30.0
    command_timeout_s: float = 330.0  # above ZVT T4 (180 s) with card waits
    currencies: Mapping[str, str] = field(default_factory=dict)  # terminal -> configured currency


@dataclass(frozen=True, slots=True)
class SiteRules:
    """How sessions may start at this site, whose EVSE a charger message names, and where a
    payment goes (routes by card; none: each EVSE's own terminal)."""

    site: str = "site"
    country: str = ""
    plug_starts: bool = True  # the charger may ask for payment ([charger] start_paths "plug")
    card_starts: bool = False  # a card tapped at the terminal starts one ([charger] start_paths)
    evse_is_sender: bool = True  # a charger event's EVSE is its sender's (MQTT tree, simulator)
    meter_keys: Mapping[str, str] = field(default_factory=dict)  # evse -> its meter's key (OCMF)
    router: tuple[Route, ...] = ()  # configured routes


@dataclass(frozen=True, slots=True)
class OnlineModifications:
    """Terminals whose modifications go to an acquirer's API (``modifications = "NAME"``), and
    those acquirers' settings: such a terminal's captures, releases, top-ups and refunds never
    reach its runner."""

    routes: Mapping[str, str] = field(default_factory=dict)  # terminal -> acquirer
    acquirers: Mapping[str, AcquirerSettings] = field(default_factory=dict)


@dataclass(slots=True)
class WorkerStatus:
    """What the daemon reads (and the worker updates) while it runs: READY waits for
    ``registered``, /health reads ``terminal_state``, tests wait for ``idle``."""

    health: Health = field(default_factory=Health)  # technical failures per terminal
    terminal_state: Board = field(default_factory=dict)  # name -> (available, why)
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: Metrics | None = None  # terminal command latencies go here


@dataclass(slots=True)
class LoopState:
    """The worker's own queue, timers and tasks: nothing outside it reads them."""

    queue: asyncio.Queue[Queued] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_CAPACITY)
    )
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    boot: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    requested: set[str] = field(default_factory=set)  # stored requests already handed over
    subscribed: bool = False
    failure: BaseException | None = None
    failed: asyncio.Event = field(default_factory=asyncio.Event)


def refund_request(m: Mapping[str, Any]) -> e.RefundRequested:
    """The event a stored refund request (an inbox row ``evpay sessions refund`` or
    ``refund-resolve`` wrote) is carried out as: one conversion, for the daemon and its tests."""
    p = m["payload"]
    return e.RefundRequested(
        session_id=p["session_id"],
        event_id=f"refund-{m['message_id']}",
        amount_minor=int(p["amount_minor"]),
        reason=str(p["reason"]),
        source=str(p.get("source", "technician")),
        inbox_id=m["message_id"],
    )
