"""``NexoClient``: one POI over HTTP(S), one service at a time, with the ServiceID discipline.

Every service goes: new ServiceID, request stored (tracker snapshot written to the state file
and fsynced) before the POST, answer checked against what we asked. A lost answer (timeout,
connection cut, 204 where an answer was due) leaves the ServiceID *unknown*; then, before any
other service on this POI, ``recover`` asks TransactionStatus for it until the POI says what
happened (its repeated answer, or NotFound), waiting ``retry_s`` on InProgress. A restart
reloads the state file: every stored ServiceID is in doubt until asked about.

HTTPS (Adyen) needs the terminal certificate's SHA-256 pinned; plain HTTP is for the XML LAN
transport (or an explicit lab setting).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from drivers.errors import DeviceUrlError
from drivers.nexo import messages as nm
from drivers.nexo.adyen_crypto import AdyenKey
from drivers.nexo.errors import (
    NexoFormatError,
    NexoMismatch,
    NexoSecurityError,
    NexoTrackerError,
)
from drivers.nexo.messages import Message
from drivers.nexo.model import (
    MessageCategory,
    MessageClass,
    MessageHeader,
    MessageReference,
    MessageType,
)
from drivers.nexo.results import poi_ref
from drivers.nexo.service_tracker import (
    AskStatus,
    Clear,
    Resolution,
    ServiceTracker,
    WaitUntil,
)
from drivers.nexo.wire import Encoding, Wire

_LOGGER = logging.getLogger(__name__)
MAX_BODY = 256 * 1024  # a nexo answer is a few kB; a bigger one is refused, not buffered
MAX_HANDLES = 2000  # closed holds kept for a later reverse(); open ones are never dropped
MAX_RECOVERED = 8  # repeated answers kept for last_result(); the oldest goes first
MAX_RECOVERY_ROUNDS = 20  # status questions per recover() call; then the caller hears UNKNOWN
_DEVICE_CLASS = {MessageCategory.DISPLAY, MessageCategory.PRINT}
# Services whose answer is kept (ServiceID in the state file) until the caller stored the result.
_MONEY = {MessageCategory.PAYMENT, MessageCategory.REVERSAL}


@dataclass(frozen=True, slots=True)
class NexoOptions:
    url: str  # http://HOST:PORT/EPASSaleToPOI/3.1 (xml) or https://HOST:8443/nexo (adyen-json)
    encoding: Encoding = "xml"
    sale_id: str = "EVPAY"
    poi_id: str = "POI"
    currency: str = "EUR"
    protocol_version: str | None = None  # default: "3.1" for xml (Swedbank), "3.0" for Adyen
    reservations: bool = True  # FirstReservation/UpdateReservation/Completion
    release_open: bool = True  # Reversal of an uncompleted reservation is accepted
    key: AdyenKey | None = field(default=None, repr=False)
    pinned_sha256: bytes | None = None  # the terminal certificate's SHA-256 (HTTPS only)
    allow_plain_json: bool = False  # lab only: Adyen JSON without HTTPS or without a key
    timeout_s: float = 60.0  # one service including the customer at the terminal
    quick_timeout_s: float = 10.0  # diagnosis, display, status questions
    retry_s: float = 5.0  # InProgress: ask again after this
    state_path: Path | None = None


@dataclass
class Exchange:
    """What one service came to: the answer, or why there is none."""

    service_id: str
    reply: Message | None = None
    lost: bool = False  # the answer was lost and recovery has not resolved it yet
    never_took_effect: bool = False  # NotFound after a lost answer
    refused_unsent: str = ""  # not sent at all (earlier service still in doubt)


class NexoClient:
    def __init__(self, options: NexoOptions) -> None:
        self.options = options
        if options.url.startswith("https://"):
            if options.pinned_sha256 is None:
                raise DeviceUrlError("an https nexo device needs its certificate pinned")
        elif not options.url.startswith("http://"):
            raise DeviceUrlError(f"{options.url!r}: nexo devices are http:// or https:// URLs")
        elif options.encoding == "adyen-json" and not options.allow_plain_json:
            raise DeviceUrlError("Adyen JSON goes over https (plain only as a lab setting)")
        if (
            options.encoding == "adyen-json"
            and options.key is None
            and not options.allow_plain_json
        ):
            raise DeviceUrlError("Adyen JSON needs the terminal's key (identifier, version)")
        self.wire = Wire(options.encoding, options.key)
        self.tracker = self._load()
        self.handles: dict[str, dict[str, Any]] = self._loaded_handles
        self.recovered: dict[str, Message] = {}  # ServiceID -> repeated answer, after a loss
        self.not_found: list[str] = []  # ServiceIDs the POI never took (bounded by MAX_RECOVERED)
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self.current: tuple[str, MessageCategory] | None = None

    # ---- state --------------------------------------------------------------------------------
    def _load(self) -> ServiceTracker:
        self._loaded_handles: dict[str, dict[str, Any]] = {}
        path = self.options.state_path
        if path is None or not path.exists():
            return ServiceTracker(retry_s=self.options.retry_s)
        data = json.loads(path.read_text())
        # A state file of an older version named holds by local numbers ("next" its counter):
        # its entries are keyed again by the POI transaction they stand for.
        self._loaded_handles = {
            (poi_ref(v["id"], v["ts"]) if "id" in v else k): {"state": v["state"]}
            for k, v in dict(data.get("handles", {})).items()
            if k != "next"
        }
        return ServiceTracker.from_snapshot(data.get("tracker", {}), retry_s=self.options.retry_s)

    def save(self) -> None:
        """Write tracker and handles durably (temp file, fsync, rename)."""
        path = self.options.state_path
        if path is None:
            return
        data = {"tracker": self.tracker.snapshot(), "handles": self.handles}
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def note_hold(self, ref: str, state: str) -> None:
        """The state of a POI transaction this sale system made (``open``, ``completed``,
        ``reversed``, ``done``), keyed by its reference; the closed ones beyond
        ``MAX_HANDLES`` are forgotten. Saved with the result's ``finish()``: one write."""
        self.handles.pop(ref, None)
        self.handles[ref] = {"state": state}
        closed = [k for k, v in self.handles.items() if v.get("state") != "open"]
        for key in closed[: max(0, len(closed) - MAX_HANDLES)]:
            del self.handles[key]

    # ---- HTTP ---------------------------------------------------------------------------------
    async def _post(self, data: bytes, timeout_s: float) -> bytes | None:
        if self._session is None:
            ssl: aiohttp.Fingerprint | bool = True
            if self.options.pinned_sha256 is not None:
                ssl = aiohttp.Fingerprint(self.options.pinned_sha256)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl))
        async with self._session.post(
            self.options.url,
            data=data,
            headers={"Content-Type": self.wire.content_type},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            if resp.status == 204:
                return None
            if resp.status != 200:
                raise NexoFormatError("http", f"status {resp.status} from the POI")
            body = await resp.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise NexoFormatError("http", f"answer larger than {MAX_BODY} bytes")
            return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def header(self, category: MessageCategory, service_id: str) -> MessageHeader:
        cls = MessageClass.DEVICE if category in _DEVICE_CLASS else MessageClass.SERVICE
        return MessageHeader(
            cls,
            category,
            MessageType.REQUEST,
            self.options.sale_id,
            self.options.poi_id,
            self.options.protocol_version or ("3.1" if self.options.encoding == "xml" else "3.0"),
            service_id,
        )

    def _check(self, request: Message, reply: Message) -> None:
        rh, ah = request.header, reply.header
        if ah.service_id != rh.service_id or ah.message_category != rh.message_category:
            raise NexoMismatch(
                f"answer {ah.message_category}/{ah.service_id} to {rh.message_category}/"
                f"{rh.service_id}"
            )
        if ah.sale_id != rh.sale_id or ah.poi_id != rh.poi_id:
            raise NexoMismatch(f"answer for {ah.sale_id}/{ah.poi_id}, not us")

    # ---- services -----------------------------------------------------------------------------
    async def service(
        self,
        category: MessageCategory,
        body: nm.Body,
        *,
        quick: bool = False,
        timeout_s: float | None = None,
    ) -> Exchange:
        """Run one service under the ServiceID discipline (recovering earlier doubt first)."""
        async with self._lock:
            doubt = await self.recover()
            if doubt:
                return Exchange("", lost=True, refused_unsent=doubt)
            sid = self.tracker.new_service_id()
            request = Message(self.header(category, sid), body)
            data = self.wire.encode(request, os.urandom(16))
            try:
                self.tracker.store(sid, category, data.decode(errors="replace"))
            except NexoTrackerError as exc:  # the in-flight bound: results nobody collected
                return Exchange("", lost=True, refused_unsent=str(exc))
            self.save()  # stored before sent
            self.tracker.check_send(sid)
            self.current = (sid, category)
            timeout = self.options.quick_timeout_s if quick else self.options.timeout_s
            timeout = timeout_s if timeout_s is not None else timeout
            try:
                raw = await self._post(data, timeout)
            except (TimeoutError, aiohttp.ClientError, NexoFormatError) as exc:
                _LOGGER.warning("nexo %s %s: answer lost (%r)", category, sid, exc)
                raw = None
            finally:
                self.current = None
            reply = self._decode_reply(request, raw)
            if reply is not None:
                if category not in _MONEY:
                    self.finish(sid)
                return Exchange(sid, reply)
            if category in _MONEY:
                self.tracker.lost(sid, time.monotonic())
                self.save()
                await self.recover()
                if sid in self.recovered:
                    return Exchange(sid, self.recovered.pop(sid))
                if any(f.service_id == sid for f in self.tracker.unresolved()):
                    return Exchange(sid, lost=True)
                return Exchange(sid, never_took_effect=True)
            self.finish(sid)  # nothing happened to money: no need to keep asking
            return Exchange(sid, lost=True)

    def finish(self, service_id: str) -> None:
        """The result of ``service_id`` is stored (engine and handles): forget the ServiceID."""
        self.tracker.answered(service_id)
        self.save()

    def _decode_reply(self, request: Message, raw: bytes | None) -> Message | None:
        if raw is None:
            return None
        try:
            reply = self.wire.decode(raw)
            self._check(request, reply)
        except (NexoFormatError, NexoSecurityError, NexoMismatch) as exc:
            _LOGGER.warning("nexo answer refused: %s", exc)
            return None
        return reply

    async def recover(self) -> str:
        """Ask TransactionStatus for every ServiceID in doubt; '' when none is left in doubt,
        else a sentence naming what is still unknown."""
        for _ in range(MAX_RECOVERY_ROUNDS):
            now = time.monotonic()
            step = self.tracker.next_step(now)
            if isinstance(step, Clear):
                return ""
            if isinstance(step, WaitUntil):
                await asyncio.sleep(max(0.0, step.at - now))
                continue
            answer = await self._ask_status(step)
            if answer is None:
                return (
                    f"ServiceID {step.service_id} unknown: the POI did not answer TransactionStatus"
                )
            try:
                resolution = self.tracker.on_status(step.service_id, answer, time.monotonic())
            except NexoTrackerError as exc:  # the POI repeated some other service's answer
                return f"ServiceID {step.service_id} unknown: {exc}"
            self.save()
            rep = answer.repeated_message_response
            if resolution is Resolution.ANSWERED and rep is not None and rep.body is not None:
                while len(self.recovered) >= MAX_RECOVERED:  # nobody collected it: ask again later
                    oldest = next(iter(self.recovered))
                    del self.recovered[oldest]
                    self.tracker.lost(oldest, now)
                self.recovered[step.service_id] = Message(rep.message_header, rep.body)
            elif resolution is Resolution.NEVER_TOOK_EFFECT:
                self.not_found = [*self.not_found[-(MAX_RECOVERED - 1) :], step.service_id]
        left = ", ".join(f.service_id for f in self.tracker.unresolved())
        return f"ServiceID {left} still in progress at the POI"

    async def _ask_status(self, step: AskStatus) -> nm.TransactionStatusResponse | None:
        sid = self.tracker.new_service_id()  # not tracked: asking is idempotent
        ref = MessageReference(
            step.category, step.service_id, sale_id=self.options.sale_id, poi_id=self.options.poi_id
        )
        request = Message(
            self.header(MessageCategory.TRANSACTION_STATUS, sid), nm.TransactionStatusRequest(ref)
        )
        try:
            raw = await self._post(
                self.wire.encode(request, os.urandom(16)), self.options.quick_timeout_s
            )
        except (TimeoutError, aiohttp.ClientError, NexoFormatError) as exc:
            _LOGGER.warning("nexo TransactionStatus for %s failed: %r", step.service_id, exc)
            return None
        reply = self._decode_reply(request, raw)
        if reply is None or not isinstance(reply.body, nm.TransactionStatusResponse):
            return None
        return reply.body

    async def abort(self, reason: str) -> bool:
        """AbortRequest for the service in flight (nexo allows it beside that service)."""
        current = self.current
        if current is None:
            return False
        sid = self.tracker.new_service_id()
        ref = MessageReference(current[1], current[0], sale_id=self.options.sale_id)
        request = Message(self.header(MessageCategory.ABORT, sid), nm.AbortRequest(ref, reason))
        try:
            await self._post(
                self.wire.encode(request, os.urandom(16)), self.options.quick_timeout_s
            )
        except (TimeoutError, aiohttp.ClientError, NexoFormatError):
            return False
        return True
