"""Outputs of the session state machine: what the engine worker must do, after the step that
decided it is stored. ``key`` is the idempotency key of the action.

A command that carries money is built with keywords only (``kw_only``): two amounts, or an
amount and a hold reference, side by side cannot be swapped by position."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Preauthorize:
    key: str
    session_id: str
    terminal: str
    amount_minor: int
    currency: str
    reference: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TopUp:
    """One more hold on the same card (ZVT: a pre-authorisation extension by the first hold's
    trace number); the terminal answers with a new receipt, or the same one increased."""

    key: str
    session_id: str
    terminal: str
    ref: str  # the session's first hold
    amount_minor: int
    currency: str
    trace_no: int | None = None
    reference: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Capture:
    key: str
    session_id: str
    terminal: str
    ref: str
    held_minor: int
    amount_minor: int
    currency: str
    reference: str
    exact: bool = False  # book amount_minor itself (06 24): the hold may be bigger than held_minor


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    key: str
    session_id: str
    terminal: str
    ref: str
    held_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class QueryOpenPreauths:
    key: str
    session_id: str
    terminal: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizeCharger:
    key: str
    session_id: str
    evse: str
    max_cost_minor: int
    currency: str
    start_by: datetime | None = None  # the charge must start before this, or the hold is released
    repeat: bool = (
        False  # said again after a restart: a link sends it only if the charger takes it once
    )


@dataclass(frozen=True, slots=True)
class StopCharger:
    key: str
    session_id: str
    evse: str
    reason: str


@dataclass(frozen=True, slots=True)
class RequestChargerState:
    """Ask the charger to report its state for ``session_id`` now (its meter reading, or its
    stop or fault if the charge is over): sent when the EVSE's meter has been silent for its
    deadline, before the session is stopped and billed on what it last heard."""

    key: str
    session_id: str
    evse: str


@dataclass(frozen=True, slots=True)
class Enqueue:
    """An upstream message, written to the outbox in the same step."""

    message_id: str
    object_key: str
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ShowReceipt:
    key: str
    session_id: str
    terminal: str
    lines: tuple[str, ...]
    display: bool = False  # the terminal has no printer: show the lines instead (at most 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundPayment:
    key: str
    session_id: str
    terminal: str
    method: str  # "reversal" (06 30 by receipt) or "refund" (06 31 by amount)
    ref: str | None  # the capture's booking receipt, for a reversal
    amount_minor: int
    currency: str


Command = (
    Preauthorize
    | TopUp
    | Capture
    | Release
    | QueryOpenPreauths
    | AuthorizeCharger
    | StopCharger
    | RequestChargerState
    | Enqueue
    | ShowReceipt
    | RefundPayment
)
TerminalCommand = (
    Preauthorize | TopUp | Capture | Release | QueryOpenPreauths | ShowReceipt | RefundPayment
)
TERMINAL_COMMANDS = (
    Preauthorize,
    TopUp,
    Capture,
    Release,
    QueryOpenPreauths,
    ShowReceipt,
    RefundPayment,
)
