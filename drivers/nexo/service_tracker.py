"""Which ServiceIDs are in flight, and what must happen before the next command.

``ServiceID`` is nexo's idempotency key. The rule this module enforces: a request is *stored*
(``store``; the caller persists ``snapshot()``) before it may be sent (``check_send``); an answer
clears it; a lost answer — or a restart, which loses every answer we were waiting for — leaves
it *unknown*, and then ``next_step`` demands ``TransactionStatus`` for it before anything else.
``InProgress`` means ask again later; ``NotFound`` means the POI never took it. Nothing is ever
sent again blindly. A service answered through TransactionStatus stays (``RESOLVED``) until
``answered()`` says its result is stored: a crash in between asks again, and the POI repeats
the same answer. Sans-I/O: time comes in as ``now`` (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from drivers.nexo.errors import NexoTrackerError
from drivers.nexo.messages import TransactionStatusResponse
from drivers.nexo.model import ErrorCondition, MessageCategory, Result

MAX_IN_FLIGHT = 8  # nexo allows one service at a time (plus Abort/Login/Status): 8 is generous
SERVICE_ID_MODULO = 10**10  # ServiceID is at most 10 characters


class State(StrEnum):
    STORED = "stored"  # persisted, not yet known to be sent
    SENT = "sent"  # on the wire, answer awaited
    UNKNOWN = "unknown"  # the answer was lost (or we restarted): ask TransactionStatus
    RESOLVED = "resolved"  # the POI repeated its answer; kept until the caller stored the result


@dataclass(frozen=True, slots=True)
class InFlight:
    service_id: str
    category: MessageCategory
    request: str  # the encoded request as sent (for the record and for a human)
    state: State
    ask_after: float = 0.0  # monotonic; 0: ask at once


@dataclass(frozen=True, slots=True)
class AskStatus:
    service_id: str
    category: MessageCategory


@dataclass(frozen=True, slots=True)
class WaitUntil:
    at: float
    service_id: str


@dataclass(frozen=True, slots=True)
class Clear:
    """No service in doubt: a new command may be stored and sent."""


Step = AskStatus | WaitUntil | Clear


class Resolution(StrEnum):
    ANSWERED = "answered"  # the original response came back repeated: use it
    NEVER_TOOK_EFFECT = "never_took_effect"  # NotFound
    ASK_AGAIN = "ask_again"  # InProgress (or a status answer that says nothing)


class ServiceTracker:
    def __init__(
        self,
        *,
        next_number: int = 1,
        in_flight: tuple[InFlight, ...] = (),
        retry_s: float = 5.0,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._next = next_number % SERVICE_ID_MODULO
        # After a restart nothing is known about what was on the wire: every entry is in doubt.
        self._flights = {f.service_id: replace(f, state=State.UNKNOWN) for f in in_flight}
        self.retry_s = retry_s
        self.max_in_flight = max_in_flight

    # ---- sending ------------------------------------------------------------------------------
    def new_service_id(self) -> str:
        for _ in range(self.max_in_flight + 1):
            sid = str(self._next or 1)
            self._next = (self._next % (SERVICE_ID_MODULO - 1)) + 1
            if sid not in self._flights:
                return sid
        raise NexoTrackerError("no free ServiceID")  # unreachable with the in-flight bound

    def store(self, service_id: str, category: MessageCategory, request: str) -> InFlight:
        if service_id in self._flights:
            raise NexoTrackerError(f"ServiceID {service_id} is already in flight")
        if len(self._flights) >= self.max_in_flight:
            raise NexoTrackerError(f"{len(self._flights)} services in flight (bound reached)")
        entry = InFlight(service_id, category, request, State.STORED)
        self._flights[service_id] = entry
        return entry

    def check_send(self, service_id: str) -> None:
        """Raise unless ``service_id`` is stored and no *other* service is in doubt."""
        entry = self._flights.get(service_id)
        if entry is None or entry.state is not State.STORED:
            raise NexoTrackerError(f"ServiceID {service_id} was not stored before sending")
        doubt = [f.service_id for f in self._flights.values() if f.state is State.UNKNOWN]
        if doubt:
            raise NexoTrackerError(f"TransactionStatus first for {', '.join(doubt)}")
        self._flights[service_id] = replace(entry, state=State.SENT)

    def answered(self, service_id: str) -> None:
        self._flights.pop(service_id, None)

    def lost(self, service_id: str, now: float) -> None:
        entry = self._flights.get(service_id)
        if entry is not None:
            self._flights[service_id] = replace(entry, state=State.UNKNOWN, ask_after=now)

    # ---- recovery -----------------------------------------------------------------------------
    def next_step(self, now: float) -> Step:
        doubt = sorted(
            (f for f in self._flights.values() if f.state is State.UNKNOWN),
            key=lambda f: f.ask_after,
        )
        if not doubt:
            return Clear()
        first = doubt[0]
        if first.ask_after > now:
            return WaitUntil(first.ask_after, first.service_id)
        return AskStatus(first.service_id, first.category)

    def on_status(
        self, service_id: str, status: TransactionStatusResponse, now: float
    ) -> Resolution:
        """Fold a TransactionStatus answer about ``service_id`` into the tracker."""
        resp = status.response
        if resp.result is Result.SUCCESS and status.repeated_message_response is not None:
            rep = status.repeated_message_response
            if rep.message_header.service_id not in (None, service_id):
                raise NexoTrackerError(
                    f"status for {service_id} repeats {rep.message_header.service_id}"
                )
            entry = self._flights.get(service_id)
            if entry is not None:
                self._flights[service_id] = replace(entry, state=State.RESOLVED)
            return Resolution.ANSWERED
        if resp.result is not Result.SUCCESS and resp.error_condition is ErrorCondition.NOT_FOUND:
            self._flights.pop(service_id, None)
            return Resolution.NEVER_TOOK_EFFECT
        entry = self._flights.get(service_id)
        if entry is not None:
            self._flights[service_id] = replace(entry, ask_after=now + self.retry_s)
        return Resolution.ASK_AGAIN

    def unresolved(self) -> tuple[InFlight, ...]:
        """Services whose outcome we do not know yet (stored, sent or in doubt)."""
        return tuple(f for f in self._flights.values() if f.state is not State.RESOLVED)

    # ---- persistence --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "next_number": self._next,
            "in_flight": [
                {"service_id": f.service_id, "category": f.category.value, "request": f.request}
                for f in self._flights.values()
            ],
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], *, retry_s: float = 5.0) -> ServiceTracker:
        flights = tuple(
            InFlight(
                str(f["service_id"]),
                MessageCategory(f["category"]),
                str(f["request"]),
                State.STORED,
            )
            for f in data.get("in_flight", [])
        )
        return cls(next_number=int(data.get("next_number", 1)), in_flight=flights, retry_s=retry_s)
