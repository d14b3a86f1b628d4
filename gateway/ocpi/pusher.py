"""Store and forward: drain the outbox to the CPO, oldest first, ordered per object,
in parallel across objects.

Per message: deliver; on "retry" (no answer, HTTP 408/429/5xx, OCPI 3xxx/4xxx) back off
exponentially with jitter (``Retry-After`` wins when given); on "refused" (HTTP 4xx, OCPI
2xxx) retry too, but only ``max_refusals`` times: a refusal that persists is a poison message,
dead-lettered with its reason, which stops it blocking its object. POST is not
idempotent: after an ambiguous failure the object is first fetched by id, and found means
delivered. The gateway keeps running sessions while the CPO is away; the backlog drains
when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from gateway.errors import OcpiRejected, UpstreamUnreachable
from gateway.ocpi.client import OcpiClient
from gateway.ocpi.fac import ascii_line, fac_from_outcome
from gateway.ocpi.models import Terminal
from gateway.settings import InteropSettings
from gateway.store import Mark, Store, StoredOutbox

_LOGGER = logging.getLogger(__name__)
_AMBIGUOUS = "ambiguous: "
_REFUSED = "refused "
# Messages OCPI has no place for go to our custom modules on the CPO's side (docs/FISCAL.md,
# docs/RECONCILIATION.md), when its version details list them; else they stay local.
CUSTOM = {
    "session.receipt": "DEEVPfiscal",
    "session.refund": "DEEVPrecon",
    "reconcile.report": "DEEVPrecon",
    "tariff.refused": "DEEVPrecon",
}
_MAPPED = ("session.outcome", "terminal.post", "command.stop_session", *CUSTOM)


class OutboxPusher:
    name = "upstream"

    def __init__(
        self,
        store: Store,
        client: OcpiClient,
        payments_url: str,
        clock: Callable[[], datetime],
        *,
        concurrency: int = 8,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 300.0,
        idle_poll_s: float = 1.0,
        max_refusals: int = 5,
        rng: random.Random | None = None,
        commands_url: str | None = None,
        interop: InteropSettings | None = None,
        custom_urls: dict[str, str | None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.store, self.client, self.clock = store, client, clock
        self.interop = interop or InteropSettings()
        self.payments_url = payments_url.rstrip("/")
        self.concurrency = concurrency
        self.backoff_min_s, self.backoff_max_s, self.idle_poll_s = (
            backoff_min_s,
            backoff_max_s,
            idle_poll_s,
        )
        self.max_refusals = max_refusals
        self.commands_url = commands_url.rstrip("/") if commands_url else None
        self.custom_urls = {k: v.rstrip("/") for k, v in (custom_urls or {}).items() if v}
        self.on_failure = on_failure or (lambda _kind: None)  # metrics: upstream failures by kind
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.wake = asyncio.Event()
        self.delivered = 0
        self._marks: list[Mark] = []  # what became of finished deliveries, not yet written

    async def run(self, stopping: asyncio.Event) -> None:
        await self._pump(stopping)

    async def drain(self) -> None:
        """Deliver everything that is due now (tests and benches)."""
        await self._pump(None)

    async def _pump(self, stopping: asyncio.Event | None) -> None:
        """Keep ``concurrency`` deliveries in flight, each object's messages one at a time and
        in order: a slow POST holds up only its own object.

        The store is visited in turns, one transaction each: what became of the deliveries
        that finished is recorded, then up to twice ``concurrency`` due heads are taken and
        marked "sending" before any of them leaves (after a crash, a message's next attempt
        asks the CPO first). Between turns the taken heads wait in ``ready``; a turn comes when
        they are used up or ``concurrency`` deliveries have finished, so one fsync serves many
        deliveries, and a head whose delivery finished is never read as due before its mark is
        written. With
        ``stopping`` None: return once nothing is due."""
        flying: dict[str, asyncio.Task[None]] = {}  # by object key
        ready: deque[StoredOutbox] = deque()
        try:
            while stopping is None or not stopping.is_set():
                if not ready or len(self._marks) >= self.concurrency:
                    marks, self._marks = self._marks, []
                    busy = {*flying, *(m.object_key for m in ready)}
                    ready += self.store.outbox.take(
                        marks,
                        self.clock(),
                        2 * self.concurrency - len(ready),
                        busy,
                        _AMBIGUOUS + "sending",
                    )
                while ready and len(flying) < self.concurrency:
                    message = ready.popleft()
                    flying[message.object_key] = asyncio.create_task(self.deliver(message))
                if not flying:
                    if stopping is None:
                        return
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.idle_poll_s):
                            await _first(stopping, self.wake)
                    continue
                done, _ = await asyncio.wait(flying.values(), return_when=asyncio.FIRST_COMPLETED)
                for key in [k for k, task in flying.items() if task in done]:
                    flying.pop(key).result()
        except asyncio.CancelledError:
            for task in flying.values():  # torn down: the requests die with us, as in a crash
                task.cancel()
            raise
        finally:
            if flying:  # stopping: let the requests under way finish (each has its timeout)
                await asyncio.gather(*flying.values(), return_exceptions=True)
            marks, self._marks = self._marks, []
            self.store.outbox.record(marks)

    async def deliver(self, message: StoredOutbox) -> None:
        """One attempt; what became of it is queued as a mark for the next flush."""
        now = self.clock()
        try:
            self._refuse_unmapped(message)
            await self._send(message)
        except _NothingToSend as skip:
            self._marks.append(Mark(message.message_id, "done", now))
            _LOGGER.debug(
                "outbox.local_only", extra={"message_id": message.message_id, "reason": str(skip)}
            )
            return
        except ValueError as exc:  # the payload cannot become an OCPI object: no retry can help
            self.on_failure("invalid")
            self._marks.append(
                Mark(message.message_id, "dead", now, f"cannot build the OCPI object: {exc}")
            )
            _LOGGER.error(  # noqa: TRY400
                "outbox.dead_letter", extra={"message_id": message.message_id, "reason": str(exc)}
            )
            return
        except OcpiRejected as exc:
            self.on_failure("refused")
            refusals = _refusals(message.last_error) + 1
            if refusals < self.max_refusals and message.kind in _MAPPED:
                delay = self._backoff(refusals)
                reason = f"{_REFUSED}{refusals}: {exc}"
                self._marks.append(
                    Mark(message.message_id, "retry", now + timedelta(seconds=delay), reason)
                )
                return
            self._marks.append(Mark(message.message_id, "dead", now, str(exc)))
            _LOGGER.error(  # noqa: TRY400 - a refused message is an outcome, its traceback is noise
                "outbox.dead_letter", extra={"message_id": message.message_id, "reason": str(exc)}
            )
            return
        except UpstreamUnreachable as exc:
            self.on_failure("ambiguous" if exc.ambiguous else "unreachable")
            delay = (
                exc.retry_after if exc.retry_after is not None else self._backoff(message.attempts)
            )
            prefix = _AMBIGUOUS if exc.ambiguous else ""
            self._marks.append(
                Mark(message.message_id, "retry", now + timedelta(seconds=delay), prefix + str(exc))
            )
            _LOGGER.info(
                "outbox.retry",
                extra={
                    "message_id": message.message_id,
                    "in_s": round(delay, 2),
                    "attempts": message.attempts + 1,
                    "error": str(exc),
                },
            )
            return
        self._marks.append(Mark(message.message_id, "done", now))
        self.delivered += 1

    def _backoff(self, attempts: int) -> float:
        base: float = min(self.backoff_max_s, self.backoff_min_s * 2.0 ** min(attempts, 30))
        return base / 2 + self.rng.random() * base / 2  # "equal jitter"

    def _refuse_unmapped(self, message: StoredOutbox) -> None:
        if message.kind not in _MAPPED:
            raise OcpiRejected(
                f"no upstream mapping for message kind {message.kind!r}",
                http_status=0,
                status_code=None,
            )

    def _collection(self, path: str) -> str:
        url = f"{self.payments_url}/{path}"
        return url + "/" if self.interop.trailing_slash else url

    def _object(self, message: StoredOutbox) -> tuple[str, str, dict[str, Any]]:
        """(collection URL, object id, OCPI JSON) for a message."""
        if message.kind == "terminal.post":
            terminal = Terminal.model_validate({**message.payload, "last_updated": self.clock()})
            return self._collection("terminals"), terminal.terminal_id, terminal.to_json()
        fac = fac_from_outcome(
            dict(message.payload), self.clock(), partial_success=self.interop.partial_success
        )
        if fac is None:
            raise _NothingToSend("the session ended without a capture: nothing to confirm upstream")
        return self._collection("financial-advice-confirmations"), fac.id, fac.to_json()

    async def _send(self, message: StoredOutbox) -> None:
        if (
            message.kind == "command.stop_session"
        ):  # a command: resending is harmless, nothing to GET
            if self.commands_url is None:
                raise UpstreamUnreachable(
                    "the CPO publishes no commands endpoint yet", ambiguous=False
                )
            url = f"{self.commands_url}/STOP_SESSION"
            await self.client.request(
                "POST", url, dict(message.payload), correlation_id=message.message_id
            )
            return
        if message.kind in CUSTOM:
            await self._send_custom(message)
            return
        url, object_id, body = self._object(message)
        by_id = f"{url.rstrip('/')}/{object_id}"
        if message.kind == "terminal.post" and self.interop.terminal_method == "PUT":
            # Interop: this CPO takes Terminals by PUT on the object's URL (idempotent: no GET
            # first).
            await self.client.request("PUT", by_id, body, correlation_id=message.message_id)
            return
        if message.last_error and message.last_error.startswith(_AMBIGUOUS):
            # An earlier POST may have arrived (timeout, reset, or a crash while sending): look
            # first.
            try:
                found = await self.client.request("GET", by_id, correlation_id=message.message_id)
            except OcpiRejected:
                found = None  # unknown there: post it
            if found is not None and found.data:
                return  # it arrived the first time
        # The "sending" mark written before this attempt began: if the gateway dies mid-request,
        # the next attempt GETs first.
        await self.client.request("POST", url, body, correlation_id=message.message_id)

    async def _send_custom(self, message: StoredOutbox) -> None:
        """A message for one of our custom modules: PUT, idempotent by its object's id. A CPO
        that does not offer the module still has the essentials in the FAC's eft_data."""
        module = CUSTOM[message.kind]
        base = self.custom_urls.get(module)
        if base is None:
            raise _NothingToSend(f"the CPO offers no {module} receiver: kept in the local journal")
        p = message.payload
        now = self.clock().isoformat()
        if message.kind == "session.receipt":
            reference = str(p.get("authorization_reference") or "")
            if not reference:
                raise _NothingToSend(
                    "a session without an authorization_reference: nothing to refer to upstream"
                )
            url = f"{base}/{reference}"
            body: dict[str, Any] = {
                "state": p["state"],
                "lines": [ascii_line(str(x)) for x in p.get("lines") or ()],
                "missing": list(p.get("missing") or ()),
                "last_updated": now,
            }
        elif message.kind == "session.refund":
            url = f"{base}/refunds/{quote(str(p['refund_id']), safe='')}"
            body = {**dict(p), "last_updated": now}
        elif message.kind == "tariff.refused":
            url = f"{base}/refused_tariffs/{quote(str(p['evse_uid']), safe='')}"
            body = {**dict(p), "last_updated": now}
        else:
            url = f"{base}/reports/{quote(str(p['report_id']), safe='')}"
            body = {**dict(p), "last_updated": now}
        await self.client.request("PUT", url, body, correlation_id=message.message_id)


def _refusals(last_error: str | None) -> int:
    """How many times in a row the CPO refused this message ("refused N: …")."""
    if not last_error or not last_error.startswith(_REFUSED):
        return 0
    count, _, _ = last_error[len(_REFUSED) :].partition(":")
    return int(count) if count.isdigit() else 0


class _NothingToSend(Exception):
    pass


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
