"""The local HTTP API (loopback by default): /health, /status, /metrics.

``evpay status`` and monitoring read it; it never changes money state.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.runtime.metrics import Metrics

_LOGGER = logging.getLogger(__name__)


class ApiWorker:
    name = "api"

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], tuple[bool, dict[str, Any]]],
        pay: Callable[[str], tuple[int, str]] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._status = status
        self._healthy = healthy
        self._pay = pay
        self.bound_port: int | None = None
        self.listening = asyncio.Event()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_ids], client_max_size=64 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/status", self._status_view)
        app.router.add_get("/metrics", self._metrics_view)
        app.router.add_post("/evses/{evse}/pay", self._pay_view)
        return app

    async def _pay_view(self, request: web.Request) -> web.Response:
        """The site's kiosk or charger screen asks to start a paid session at an EVSE."""
        evse = request.match_info["evse"]
        if self._pay is None:
            return web.json_response({"error": "no payment engine runs on this site"}, status=409)
        status, message = self._pay(evse)
        if status != 202:
            return web.json_response({"evse": evse, "error": message}, status=status)
        return web.json_response({"evse": evse, "status": message}, status=202)

    async def _health(self, _request: web.Request) -> web.Response:
        ok, details = self._healthy()
        return web.json_response({"status": "ok" if ok else "degraded", **details}, status=200 if ok else 503)

    async def _status_view(self, _request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def _metrics_view(self, _request: web.Request) -> web.Response:
        return web.Response(text=self._metrics.render(), content_type="text/plain", charset="utf-8")

    async def run(self, stopping: asyncio.Event) -> None:
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
            _LOGGER.info("api.listening", extra={"host": self._host, "port": self.bound_port})
            self.listening.set()
            await stopping.wait()
        finally:
            self.listening.clear()
            await runner.cleanup()


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
