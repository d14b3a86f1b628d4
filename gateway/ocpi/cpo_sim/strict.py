"""How strictly the embedded CPO answers every request: message ids required and echoed,
tokens checked, unknown fields refused, injected faults and quirks; serving and stopping."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from gateway.ocpi.cpo_sim.state import VERSION, CpoState
from gateway.ocpi.models import envelope


class CpoBase:
    """What every endpoint shares; the endpoints are the parts that subclass it."""

    def __init__(self, state: CpoState | None = None) -> None:
        self.state = state or CpoState()
        self._tasks: set[asyncio.Task[None]] = set()
        self.base = ""
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _strict(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Message ids required (and echoed); quirks that change how whole requests are answered."""
        if self.state.down:
            return web.json_response(
                envelope(status_code=3000, message="down for maintenance"), status=503
            )
        if self.state.require_ids and not (
            request.headers.get("X-Request-ID") and request.headers.get("X-Correlation-ID")
        ):
            self.state.rejected.append(
                f"{request.method} {request.path}: no X-Request-ID/X-Correlation-ID"
            )
            return web.json_response(
                envelope(status_code=2001, message="X-Request-ID and X-Correlation-ID required"),
                status=400,
            )
        collection = request.path.endswith(("/terminals", "/financial-advice-confirmations"))
        if "redirect_slash" in self.state.quirks and request.method == "POST" and collection:
            raise web.HTTPPermanentRedirect(request.path + "/")
        response: web.StreamResponse = await handler(request)
        for name in ("X-Request-ID", "X-Correlation-ID"):
            if name in request.headers:
                response.headers[name] = request.headers[name]
        return response

    def _refuse(self, why: str, status: int = 400, code: int = 2001) -> web.Response:
        self.state.rejected.append(why)
        if "plain422" in self.state.quirks and status == 400:
            return web.Response(
                status=422, text=f"Unprocessable Entity: {why}", content_type="text/plain"
            )
        return web.json_response(envelope(status_code=code, message=why), status=status)

    def _unauthorized(self) -> web.Response:
        return web.json_response(
            envelope(status_code=2000, message="unauthorized"),
            status=403 if "auth403" in self.state.quirks else 401,
        )

    async def _object(self, request: web.Request, model: Any) -> Any:
        """The body as ``model``: strict JSON types, and no field the model does not know."""
        raw = await request.read()
        data = json.loads(raw)
        unknown = sorted(set(data) - set(model.model_fields)) if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        return model.model_validate_json(raw, strict=True)

    def _endpoint_base(self) -> str:
        """Where the details say the modules are: here, or (quirk ``foreign_endpoints``)
        elsewhere."""
        if "foreign_endpoints" in self.state.quirks:
            return self.base.replace("127.0.0.1", "127.0.0.2")
        return self.base

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def versions_url(self) -> str:
        return f"{self.base}/ocpi/versions"

    @property
    def payments_url(self) -> str:
        return f"{self.base}/ocpi/cpo/{VERSION}/payments"

    @property
    def fac_url(self) -> str:
        return f"{self.base}/ocpi/cpo/{VERSION}/payments/financial-advice-confirmations"

    def _token(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Token "):
            return None
        try:
            return base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None

    def _allowed(self, request: web.Request, *, registration: bool = False) -> bool:
        token = self._token(request)
        return (
            token in self.state.tokens
            or (registration and token == self.state.token_a)
            or (token == self.state.token_a and request.method == "GET")
        )

    async def _fault(self, request: web.Request) -> web.Response | None:
        if not self.state.faults:
            return None
        fault = self.state.faults[0]
        if fault == "reset_after_store":
            return None  # handled by the endpoint after storing
        self.state.faults.popleft()
        if fault == "http500":
            return web.json_response(
                envelope(status_code=3000, message="internal error"), status=500
            )
        if fault == "retry_after":
            return web.json_response(
                envelope(status_code=3000, message="busy"),
                status=503,
                headers={"Retry-After": "0.2"},
            )
        if fault == "ocpi2001":
            return web.json_response(
                envelope(status_code=2001, message="invalid or missing parameters"), status=400
            )
        if fault == "ocpi3001":
            return web.json_response(
                envelope(status_code=3001, message="unable to use the client's API")
            )
        if fault == "slow":
            await asyncio.sleep(self.state.slow_s)
            return None
        if fault == "drop":
            _drop(request)
            return web.Response(status=500)
        return None

    async def _ptp_endpoints(
        self, http: aiohttp.ClientSession, versions_url: str
    ) -> dict[str, str]:
        async with http.get(versions_url) as r:
            version_url = (await r.json())["data"][0]["url"]
        async with http.get(version_url) as r:
            details = (await r.json())["data"]
        return {e["identifier"]: e["url"] for e in details["endpoints"]}

    def _list(self, request: web.Request, objects: list[dict[str, Any]]) -> web.Response:
        """A paginated Sender list: one object per page, to exercise the Link header."""
        if not self._allowed(request):
            return self._unauthorized()
        offset = int(request.query.get("offset", "0"))
        headers = {"X-Total-Count": str(len(objects)), "X-Limit": "1"}
        if offset + 1 < len(objects):
            headers["Link"] = (
                f'<{request.url.with_query({"offset": str(offset + 1), "limit": "1"})}>; rel="next"'
            )
        return web.json_response(envelope(objects[offset : offset + 1]), headers=headers)

    async def _post(
        self,
        request: web.Request,
        model: Any,
        table: dict[str, dict[str, Any]],
        key: str,
        log: list[str] | None,
    ) -> web.Response:
        if not self._allowed(request):
            return self._unauthorized()
        fault = await self._fault(request)
        if fault is not None:
            return fault
        try:
            obj = await self._object(request, model)
        except (ValidationError, ValueError) as exc:
            return self._refuse(f"invalid {model.__name__}: {exc}")
        if (
            "no_partial_success" in self.state.quirks
            and getattr(obj, "capture_status_code", None) == "PARTIAL_SUCCESS"
        ):
            return self._refuse("PARTIAL_SUCCESS is not accepted by this CPO")
        data = obj.model_dump(mode="json", exclude_none=True)
        created = data[key] not in table
        table[data[key]] = data
        if log is not None:
            log.append(data[key])
        if self.state.faults and self.state.faults[0] == "reset_after_store":
            self.state.faults.popleft()
            _drop(request)
        return web.json_response(envelope(), status=201 if created else 200)

    def _get(self, request: web.Request, table: dict[str, dict[str, Any]]) -> web.Response:
        if not self._allowed(request):
            return self._unauthorized()
        found = table.get(request.match_info["id"])
        if found is None:
            return web.json_response(
                envelope(status_code=2000, message="unknown object"), status=404
            )
        return web.json_response(envelope(found))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}


def _with_ids() -> aiohttp.TraceConfig:
    """Every request the CPO makes carries fresh message ids (a correlation id per request)."""

    async def on_start(_session: Any, _ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        params.headers.setdefault("X-Request-ID", secrets.token_hex(8))
        params.headers.setdefault("X-Correlation-ID", secrets.token_hex(8))

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    return config


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _drop(request: web.Request) -> None:
    """Close the connection without an answer (a reset as the client sees it)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
