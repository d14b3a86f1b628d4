"""The one registry of terminal protocols: a protocol's name → the builder of its driver.

The engine setup, ``evpay doctor`` and the ``evpay terminal`` bench CLI all build a terminal
from its settings through ``build``; none of them knows which protocols exist. A protocol is
added by writing its settings member (gateway/settings/terminals.py) and calling ``register``
with its builder, the way aioquic registers congestion controllers by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from drivers.base import PaymentTerminal
from drivers.nexo.adyen_crypto import AdyenKey
from drivers.nexo.asyncio.client import NexoOptions
from drivers.nexo.asyncio.terminal import NexoTerminal
from drivers.transport import open_transport
from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
from gateway.errors import ConfigError
from gateway.settings import NexoTerminalSettings, TerminalSettings, ZvtTerminalSettings


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a builder needs beyond the terminal's own settings."""

    currency: str  # the terminal's currency (its own, else the site's)
    state_dir: Path  # where a driver keeps its durable state (beside the store)


Builder = Callable[[Any, BuildContext], PaymentTerminal]


@dataclass(frozen=True, slots=True)
class Driver:
    settings: type[BaseModel]  # the protocol's member of the TerminalSettings union
    build: Builder


_DRIVERS: dict[str, Driver] = {}


def register(protocol: str, settings: type[BaseModel], builder: Builder) -> None:
    """Make ``protocol`` buildable; registering a name twice is a programming error."""
    if protocol in _DRIVERS:
        raise ValueError(f"terminal protocol {protocol!r} is already registered")
    _DRIVERS[protocol] = Driver(settings, builder)


def protocols() -> tuple[str, ...]:
    return tuple(_DRIVERS)


def driver(protocol: str) -> Driver:
    found = _DRIVERS.get(protocol)
    if found is None:
        raise ConfigError("protocol", [f"no driver for {protocol!r}; known: {protocols()}"])
    return found


def build(t: TerminalSettings, context: BuildContext) -> PaymentTerminal:
    return driver(t.protocol).build(t, context)


def _zvt(t: ZvtTerminalSettings, context: BuildContext) -> PaymentTerminal:
    transport, serial_framing = open_transport(t.device)
    if t.password is None:  # never a silent factory default
        raise ConfigError(
            f"terminals.{t.id}.password", ["required: the terminal's 6-digit ZVT password"]
        )
    options = ZvtOptions(
        password=t.password.reveal(),
        currency=context.currency,
        capture_mode=t.capture_mode,
        incremental=t.incremental,
        charset=t.charset,
        topup_amount=t.topup_amount,
    )
    return ZvtTerminal(t.id, transport, serial_framing=serial_framing, options=options)


def _nexo(t: NexoTerminalSettings, context: BuildContext) -> PaymentTerminal:
    key = None
    if t.key is not None:
        key = AdyenKey(t.key.identifier, t.key.version, t.key.passphrase.reveal())
    options = NexoOptions(
        url=t.device,
        encoding=t.encoding,
        sale_id=t.sale_id,
        poi_id=t.poi_id,
        currency=context.currency,
        reservations=t.reservations,
        release_open=t.release_open,
        key=key,
        pinned_sha256=bytes.fromhex(t.pinned_sha256) if t.pinned_sha256 else None,
        allow_plain_json=t.lab_plain_http,
        state_path=context.state_dir / f"nexo-{t.id}.json",
    )
    return NexoTerminal(t.id, options)


register("zvt", ZvtTerminalSettings, _zvt)
register("nexo", NexoTerminalSettings, _nexo)
