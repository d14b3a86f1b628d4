"""Store and forward for acquirer modifications: recorded first, sent when the uplink lets us.

A modification is written (``queued``) before anything is sent, so a crash or a dead uplink
loses nothing. ``drain`` sends the queued ones in the order they were decided; each is sent
until the acquirer takes it, always under its own command key, so a repeat after a lost answer
is the same modification to the acquirer. "Received" starts the wait for the webhook, with a
deadline; a refusal is final and visible. Nothing here ever decides an outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.acquirer.port import Acquirer, Modification
from gateway.errors import AcquirerRejected, AcquirerUnreachable
from gateway.store.acquirer import QUEUE_BATCH, AcquirerBook

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Drained:
    received: int
    rejected: int
    waiting: int  # still queued: the uplink failed during this turn


class Forwarder:
    def __init__(
        self,
        book: AcquirerBook,
        acquirer: Acquirer,
        clock: Callable[[], datetime],
        *,
        webhook_deadline: timedelta,
    ) -> None:
        self.book = book
        self.acquirer = acquirer
        self.clock = clock
        self.webhook_deadline = webhook_deadline

    def submit(self, modification: Modification) -> bool:
        """Record the decision (durable before any I/O). False: this key was recorded before."""
        return self.book.enqueue(self.acquirer.name, modification, self.clock())

    async def drain(self) -> Drained:
        """One turn over up to QUEUE_BATCH queued modifications, oldest first. An unreachable
        acquirer ends the turn (the rest would fail alike); the next turn starts over with the
        same oldest one, so the order of decisions is the order of sending."""
        received = rejected = 0
        queued = self.book.queued(self.acquirer.name, QUEUE_BATCH)
        for stored in queued:
            key = stored.modification.command_key
            try:
                answer = await self.acquirer.send(stored.modification)
            except AcquirerUnreachable as exc:
                self.book.attempt_failed(key, str(exc))
                _LOGGER.warning(
                    "acquirer.unreachable", extra={"acquirer": self.acquirer.name, "key": key}
                )
                return Drained(received, rejected, len(queued) - received - rejected)
            except AcquirerRejected as exc:
                self.book.rejected(key, str(exc), self.clock())
                rejected += 1
                _LOGGER.error(  # noqa: TRY400 - a refusal, not a fault: no trace
                    "acquirer.rejected",
                    extra={"acquirer": self.acquirer.name, "key": key, "code": exc.error_code},
                )
                continue
            now = self.clock()
            self.book.received(key, answer.acquirer_reference, now, now + self.webhook_deadline)
            received += 1
        return Drained(received, rejected, 0)
