"""The local HTTP API (loopback by default): /health, /status, /metrics.

``evpay status`` and monitoring read it; it never changes money state.
"""

from __future__ import annotations

import asyncio
import logging
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
        healthy: Callable[[], bool],
        pay: Callable[[str], bool] | None = None,
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
        app = web.Application()
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
        if not self._pay(evse):
            return web.json_response({"error": f"unknown EVSE {evse!r}"}, status=404)
        return web.json_response({"evse": evse, "status": "payment requested"}, status=202)

    async def _health(self, _request: web.Request) -> web.Response:
        ok = self._healthy()
        return web.json_response({"status": "ok" if ok else "degraded"}, status=200 if ok else 503)

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
