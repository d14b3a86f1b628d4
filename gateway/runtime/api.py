"""The local HTTP API (loopback by default): /health, /status, /metrics, and the kiosk's
``POST /evses/{evse}/pay``.

Reading is open (monitoring on the controller). Paying is guarded: a bearer token per client
when any are configured (compared by SHA-256, constant time), ``Content-Type:
application/json`` (a browser cannot send that cross-origin without a preflight, which this
API never grants), and any ``Origin`` header must be an allowed one. A pay request is stored
as a session before it is answered 202, or refused at once with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from aiohttp import web

from gateway.errors import QueueFull, Unavailable
from gateway.jsonscan import brackets
from gateway.payments.preauth import Target
from gateway.runtime.admission import PayAnswer
from gateway.runtime.connections import (
    BODY_TIMEOUT_S,
    REQUEST_DEADLINE_S,
    ConnectionGuard,
    GuardedSite,
    too_many_bodies,
)
from gateway.runtime.metrics import Metrics

_LOGGER = logging.getLogger(__name__)
MAX_JSON_DEPTH = 16  # as the OCPI server: a kiosk's body is two levels deep
_ARRIVED = web.RequestKey("arrived", float)  # loop time of the request's first byte
# (evse, Idempotency-Key, target, client id) -> the stored session or the refusal
Pay = Callable[[str, str | None, Target | None, str], PayAnswer]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class ApiWorker:
    name = "api"

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], tuple[bool, dict[str, Any]]],
        pay: Pay | None = None,
        client_hashes: dict[str, str] | None = None,
        allowed_origins: Sequence[str] = (),
        *,
        guard: ConnectionGuard | None = None,
        body_timeout_s: float = BODY_TIMEOUT_S,
        deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        self._clients = dict(client_hashes or {})  # sha256 hex of the token -> client id
        self._origins = set(allowed_origins)
        self._host = host
        self._port = port
        self._metrics = metrics
        self._status = status
        self._healthy = healthy
        self._pay = pay
        self.guard = guard or ConnectionGuard()
        self._body_timeout = body_timeout_s
        self._deadline = deadline_s
        self.bound_port: int | None = None
        self.listening = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_ids, self._in_time], client_max_size=64 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/status", self._status_view)
        app.router.add_get("/metrics", self._metrics_view)
        app.router.add_post("/evses/{evse}/pay", self._pay_view)
        return app

    def _refusal(self, request: web.Request) -> web.Response | str:
        """The refusal, or the id of the client that asks ('' when the API takes no tokens)."""
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self._origins:
            return web.json_response({"error": f"origin {origin!r} is not allowed"}, status=403)
        if request.content_type != "application/json":
            return web.json_response({"error": "send Content-Type: application/json"}, status=415)
        if not self._clients:
            return ""
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        digest = hashlib.sha256(token.encode()).hexdigest()
        # every known digest is compared (constant time), whichever matches
        found = [c for known, c in self._clients.items() if hmac.compare_digest(digest, known)]
        if not token or not found:
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found[0]

    @web.middleware
    async def _in_time(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A request is handled only within its deadline from its first byte: one the client
        has given up on (a loop held up, a slow sender) is refused, never run later."""
        transport = request.transport
        arrived = self.guard.started(transport)
        if arrived is not None:
            request[_ARRIVED] = arrived
        try:
            late = self._late(request)
            if late is not None:
                return late
            if request.body_exists and not self.guard.may_read_body(transport):
                return too_many_bodies()
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            self.guard.finished(transport)

    def _late(self, request: web.Request) -> web.Response | None:
        arrived = request.get(_ARRIVED)
        waited = 0.0 if arrived is None else asyncio.get_running_loop().time() - arrived
        if waited <= self._deadline:
            return None
        _LOGGER.warning("api.request_late", extra={"path": request.path, "waited_s": waited})
        return web.json_response(
            {
                "error": f"the request waited {waited:.1f} s (limit {self._deadline:.0f} s); "
                "it was not run: send it again"
            },
            status=503,
            headers={"Retry-After": "1"},
        )

    async def _body(self, request: web.Request) -> object:
        """The JSON body, read within the body timeout and no deeper than MAX_JSON_DEPTH."""
        if not request.can_read_body:
            return {}
        try:
            async with asyncio.timeout(self._body_timeout):
                raw = await request.read()
        except TimeoutError:
            raise _Refused(
                408, f"the body did not arrive within {self._body_timeout:.0f} s"
            ) from None
        text = raw.decode("utf-8", "replace")
        if any(depth > MAX_JSON_DEPTH for _, depth in brackets(text)):
            raise _Refused(400, f"invalid body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _Refused(400, f"invalid body: not JSON ({exc})") from None

    async def _pay_view(self, request: web.Request) -> web.Response:
        """The site's kiosk or charger screen asks to start a paid session at an EVSE."""
        client = self._refusal(request)
        if not isinstance(client, str):
            return client
        evse = request.match_info["evse"]
        if self._pay is None:
            return web.json_response({"error": "no payment engine runs on this site"}, status=409)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (1 <= len(key) <= 128 and key.isprintable()):
            return web.json_response(
                {"error": "Idempotency-Key must be 1 to 128 printable characters"}, status=400
            )
        try:
            target = _target(await self._body(request))
        except _Refused as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        except ValueError as exc:
            return web.json_response({"error": f"invalid body: {exc}"}, status=400)
        late = self._late(request)  # the body too must come in time: else nothing is started
        if late is not None:
            return late
        try:
            answer = self._pay(evse, key, target, client)
        except QueueFull as exc:  # nothing was stored: the kiosk may ask again
            return web.json_response({"evse": evse, "error": str(exc)}, status=503)
        body: dict[str, Any] = {"evse": evse}
        if answer.session_id:
            body.update(session=answer.session_id, state=answer.state)
        if answer.status != 202:
            return web.json_response({**body, "error": answer.message}, status=answer.status)
        return web.json_response({**body, "status": answer.message}, status=202)

    async def _health(self, _request: web.Request) -> web.Response:
        ok, details = self._healthy()
        return web.json_response(
            {"status": "ok" if ok else "degraded", **details}, status=200 if ok else 503
        )

    async def _status_view(self, _request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def _metrics_view(self, _request: web.Request) -> web.Response:
        text = await self._metrics.scrape()
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def bind(self) -> None:
        """Listen now (before READY): a port in use is a start failure, not a restart loop. The
        listener is aiohttp's protocol behind the connection guard (cap, header timeout)."""
        if self._runner is not None:
            return
        runner = web.AppRunner(
            self._app(), access_log=None, keepalive_timeout=self.guard.header_timeout_s
        )
        await runner.setup()
        site = GuardedSite(runner, self._host, self._port, self.guard)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise Unavailable(
                f"api: cannot listen on {self._host}:{self._port}: {exc.strerror or exc}; "
                "free the port or change [api] port"
            ) from None
        self.bound_port = site.port
        self._runner = runner
        _LOGGER.info("api.listening", extra={"host": self._host, "port": self.bound_port})

    async def run(self, stopping: asyncio.Event) -> None:
        await self.bind()
        self.listening.set()
        try:
            await stopping.wait()
        finally:
            self.listening.clear()
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None


@web.middleware
async def _ids(request: web.Request, handler: Any) -> web.StreamResponse:
    """Echo X-Request-ID and X-Correlation-ID on every answer; no bare 500 for a client."""
    request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    correlation_id = request.headers.get("X-Correlation-ID") or request_id
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        response = web.json_response({"error": exc.reason}, status=exc.status)
    except Exception:
        _LOGGER.exception("api.error", extra={"path": request.path, "request_id": request_id})
        response = web.json_response({"error": "internal error; nothing was done"}, status=500)
    response.headers["X-Request-ID"] = request_id
    response.headers["X-Correlation-ID"] = correlation_id
    return response


def _target(body: object) -> Target | None:
    """The driver's declared target from the kiosk: {"target": {"kwh": "20"}} or {"target":
    {"amount_minor": 3000}} (amounts in minor units or as decimal strings, never floats)."""
    if not isinstance(body, dict) or set(body) - {"target"}:
        raise ValueError('expected {} or {"target": {"kwh": "…"} | {"amount_minor": N}}')
    raw = body.get("target")
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError('target is {"kwh": "<decimal>"} or {"amount_minor": <int>}')
    if "kwh" in raw and isinstance(raw["kwh"], str | int) and not isinstance(raw["kwh"], bool):
        try:
            kwh = Decimal(str(raw["kwh"]))
        except ArithmeticError:
            raise ValueError("target.kwh is not a decimal number") from None
        if not (kwh.is_finite() and 0 < kwh <= 1000):  # NaN compares by raising
            raise ValueError("target.kwh must be between 0 and 1000")
        return Target(kwh=kwh)
    amount = raw.get("amount_minor")
    if isinstance(amount, int) and not isinstance(amount, bool) and 0 < amount <= 10_000_000:
        return Target(amount_minor=amount)
    raise ValueError('target is {"kwh": "<decimal>"} or {"amount_minor": <positive int>}')
