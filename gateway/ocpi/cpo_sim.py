"""The embedded CPO: a small but strict OCPI 2.3.0 CPO for the payments flow.

Serves versions and version details, the credentials registration (token A → token C), and
the payments receiver (Financial Advice Confirmations and Terminals: POST and GET by id).
Every object it receives is validated against ``gateway.ocpi.models``; it records what it
stored, and can be told to fail the next requests: ``http500``, ``retry_after``, ``ocpi2001``,
``ocpi3001``, ``slow`` (answer after ``slow_s``), ``reset_after_store`` (store, then drop the
connection without an answer), ``drop`` (drop before storing).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from gateway.ocpi.models import (
    Credentials,
    FinancialAdviceConfirmation,
    StartSession,
    StopSession,
    Terminal,
    envelope,
)

VERSION = "2.3.0"


@dataclass
class CpoState:
    token_a: str = "token-a-for-the-ptp"  # noqa: S105 - the simulator's registration token, not a secret
    tokens: set[str] = field(default_factory=set)  # credentials tokens (C) issued
    faults: deque[str] = field(default_factory=deque)
    slow_s: float = 2.0
    facs: dict[str, dict[str, Any]] = field(default_factory=dict)
    fac_posts: list[str] = field(default_factory=list)  # ids in arrival order, duplicates included
    terminals: dict[str, dict[str, Any]] = field(default_factory=dict)
    registered: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    # the standard flow: a StartSession runs a simulated charge and pushes it to the PTP
    session_kwh: Decimal = Decimal(6)
    kwh_step: Decimal = Decimal(1)
    push_interval_s: float = 0.05
    price_per_kwh: Decimal = Decimal("0.50")
    commands: list[str] = field(default_factory=list)
    stop_requested: set[str] = field(default_factory=set)
    cdrs: list[dict[str, Any]] = field(default_factory=list)
    tariffs: list[dict[str, Any]] = field(default_factory=list)  # OCPI Tariff objects it publishes
    fiscal_lines: list[str] = field(default_factory=list)  # sent after the CDR (custom module DEEVPfiscal)
    locations: list[dict[str, Any]] = field(default_factory=list)


class CpoSimulator:
    def __init__(self, state: CpoState | None = None) -> None:
        self.state = state or CpoState()
        self._tasks: set[asyncio.Task[None]] = set()
        self.base = ""
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/ocpi/versions", self._versions)
        r.add_get(f"/ocpi/{VERSION}", self._details)
        r.add_post(f"/ocpi/{VERSION}/credentials", self._register)
        r.add_put(f"/ocpi/{VERSION}/credentials", self._rotate)
        r.add_delete(f"/ocpi/{VERSION}/credentials", self._unregister)
        pay = f"/ocpi/cpo/{VERSION}/payments"
        r.add_post(f"{pay}/financial-advice-confirmations", self._post_fac)
        r.add_get(f"{pay}/financial-advice-confirmations/{{id}}", self._get_fac)
        r.add_post(f"/ocpi/cpo/{VERSION}/commands/{{command}}", self._command)
        r.add_get(f"/ocpi/cpo/{VERSION}/tariffs", self._list_tariffs)
        r.add_get(f"/ocpi/cpo/{VERSION}/locations", self._list_locations)
        r.add_post(f"{pay}/terminals", self._post_terminal)
        r.add_get(f"{pay}/terminals/{{id}}", self._get_terminal)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://{host}:{bound}"
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

    # ---- plumbing -------------------------------------------------------------------------

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
            return web.json_response(envelope(status_code=3000, message="internal error"), status=500)
        if fault == "retry_after":
            return web.json_response(
                envelope(status_code=3000, message="busy"), status=503, headers={"Retry-After": "0.2"}
            )
        if fault == "ocpi2001":
            return web.json_response(envelope(status_code=2001, message="invalid or missing parameters"), status=400)
        if fault == "ocpi3001":
            return web.json_response(envelope(status_code=3001, message="unable to use the client's API"))
        if fault == "slow":
            await asyncio.sleep(self.state.slow_s)
            return None
        if fault == "drop":
            _drop(request)
            return web.Response(status=500)
        return None

    # ---- endpoints -------------------------------------------------------------------------

    async def _versions(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return web.json_response(envelope(status_code=2000, message="unauthorized"), status=401)
        return web.json_response(envelope([{"version": VERSION, "url": f"{self.base}/ocpi/{VERSION}"}]))

    async def _details(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return web.json_response(envelope(status_code=2000, message="unauthorized"), status=401)
        endpoints = [
            {"identifier": "credentials", "role": "RECEIVER", "url": f"{self.base}/ocpi/{VERSION}/credentials"},
            {"identifier": "payments", "role": "RECEIVER", "url": f"{self.base}/ocpi/cpo/{VERSION}/payments"},
            {"identifier": "commands", "role": "RECEIVER", "url": f"{self.base}/ocpi/cpo/{VERSION}/commands"},
            {"identifier": "tariffs", "role": "SENDER", "url": f"{self.base}/ocpi/cpo/{VERSION}/tariffs"},
            {"identifier": "locations", "role": "SENDER", "url": f"{self.base}/ocpi/cpo/{VERSION}/locations"},
        ]
        return web.json_response(envelope({"version": VERSION, "endpoints": endpoints}))

    async def _register(self, request: web.Request, *, rotating: bool = False) -> web.Response:
        if not rotating and not self._allowed(request, registration=True):
            return web.json_response(envelope(status_code=2000, message="unauthorized"), status=401)
        try:
            creds = Credentials.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            self.state.rejected.append(str(exc))
            return web.json_response(envelope(status_code=2001, message="invalid credentials"), status=400)
        self.state.registered.append(creds.to_json())
        token_c = secrets.token_hex(16)
        self.state.tokens.add(token_c)
        role = {"role": "CPO", "party_id": "CPO", "country_code": "DE", "business_details": {"name": "Embedded CPO"}}
        reply = {"token": token_c, "url": self.versions_url, "roles": [role]}
        return web.json_response(envelope(reply))

    async def _rotate(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token not in self.state.tokens:
            return web.json_response(envelope(status_code=2000, message="not registered"), status=405)
        self.state.tokens.discard(token)
        return await self._register(request, rotating=True)

    async def _unregister(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token not in self.state.tokens:
            return web.json_response(envelope(status_code=2000, message="not registered"), status=405)
        self.state.tokens.discard(token)
        return web.json_response(envelope())

    async def _command(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return web.json_response(envelope(status_code=2000, message="unauthorized"), status=401)
        command = request.match_info["command"]
        self.state.commands.append(command)
        try:
            body = await request.json()
            if command == "START_SESSION":
                start = StartSession.model_validate(body)
                self._tasks.add(asyncio.create_task(self._run_session(start)))
            elif command == "STOP_SESSION":
                self.state.stop_requested.add(StopSession.model_validate(body).session_id)
            else:
                return web.json_response(envelope({"result": "NOT_SUPPORTED", "timeout": 0}))
        except (ValidationError, ValueError) as exc:
            self.state.rejected.append(str(exc))
            return web.json_response(envelope(status_code=2001, message="invalid command"), status=400)
        return web.json_response(envelope({"result": "ACCEPTED", "timeout": 30}))

    async def _run_session(self, start: StartSession) -> None:
        """Charge, pushing Session updates to the PTP, then send the CDR and the CommandResult."""
        ptp = self.state.registered[-1]
        headers = {"Authorization": "Token " + base64.b64encode(ptp["token"].encode()).decode()}
        async with aiohttp.ClientSession(headers=headers) as http:
            endpoints = await self._ptp_endpoints(http, ptp["url"])
            sid = f"CPO-{secrets.token_hex(6)}"
            now = datetime.now(UTC)
            session = {"country_code": "DE", "party_id": "CPO", "id": sid, "start_date_time": _ts(now), "kwh": 0,
                       "authorization_reference": start.authorization_reference, "location_id": start.location_id,
                       "evse_uid": start.evse_uid or "EVSE", "currency": "EUR", "status": "ACTIVE",
                       "last_updated": _ts(now)}  # fmt: skip
            url = f"{endpoints['sessions']}/DE/CPO/{sid}"
            await http.put(url, json=session)
            await http.post(start.response_url, json={"result": "ACCEPTED"})
            kwh = Decimal(0)
            while kwh < self.state.session_kwh and sid not in self.state.stop_requested:
                await asyncio.sleep(self.state.push_interval_s)
                kwh = min(kwh + self.state.kwh_step, self.state.session_kwh)
                await http.patch(url, json={"kwh": float(kwh), "last_updated": _ts(datetime.now(UTC))})
            end = datetime.now(UTC)
            await http.patch(url, json={"status": "COMPLETED", "end_date_time": _ts(end), "last_updated": _ts(end)})
            cost = (kwh * self.state.price_per_kwh).quantize(Decimal("0.01"))
            cdr = {"country_code": "DE", "party_id": "CPO", "id": f"CDR-{sid}",
                   "start_date_time": session["start_date_time"], "end_date_time": _ts(end), "session_id": sid,
                   "authorization_reference": start.authorization_reference,
                   "currency": "EUR", "total_cost": {"before_taxes": float(cost)}, "total_energy": float(kwh),
                   "invoice_reference_id": f"INV-{sid}", "last_updated": _ts(end)}  # fmt: skip
            self.state.cdrs.append(cdr)
            await http.post(endpoints["cdrs"], json=cdr)
            if self.state.fiscal_lines and "DEEVPfiscal" in endpoints:
                fiscal = {"lines": [*self.state.fiscal_lines, f"Invoice {cdr['invoice_reference_id']}"],
                          "invoice_reference_id": cdr["invoice_reference_id"]}  # fmt: skip
                await http.put(f"{endpoints['DEEVPfiscal']}/{start.authorization_reference}", json=fiscal)

    async def _ptp_endpoints(self, http: aiohttp.ClientSession, versions_url: str) -> dict[str, str]:
        async with http.get(versions_url) as r:
            version_url = (await r.json())["data"][0]["url"]
        async with http.get(version_url) as r:
            details = (await r.json())["data"]
        return {e["identifier"]: e["url"] for e in details["endpoints"]}

    async def _list_tariffs(self, request: web.Request) -> web.Response:
        return self._list(request, self.state.tariffs)

    async def _list_locations(self, request: web.Request) -> web.Response:
        return self._list(request, self.state.locations)

    def _list(self, request: web.Request, objects: list[dict[str, Any]]) -> web.Response:
        """A paginated Sender list: one object per page, to exercise the Link header."""
        if not self._allowed(request):
            return web.json_response(envelope(status_code=2000, message="unauthorized"), status=401)
        offset = int(request.query.get("offset", "0"))
        headers = {"X-Total-Count": str(len(objects)), "X-Limit": "1"}
        if offset + 1 < len(objects):
            headers["Link"] = f'<{request.url.with_query({"offset": str(offset + 1), "limit": "1"})}>; rel="next"'
        return web.json_response(envelope(objects[offset : offset + 1]), headers=headers)

    async def _post_fac(self, request: web.Request) -> web.Response:
        return await self._post(request, FinancialAdviceConfirmation, self.state.facs, "id", self.state.fac_posts)

    async def _get_fac(self, request: web.Request) -> web.Response:
        return self._get(request, self.state.facs)

    async def _post_terminal(self, request: web.Request) -> web.Response:
        return await self._post(request, Terminal, self.state.terminals, "terminal_id", None)

    async def _get_terminal(self, request: web.Request) -> web.Response:
        return self._get(request, self.state.terminals)

    async def _post(
        self, request: web.Request, model: Any, table: dict[str, dict[str, Any]], key: str, log: list[str] | None
    ) -> web.Response:
        if not self._allowed(request):
            return web.json_response(envelope(status_code=2000, message="unauthorized"), status=401)
        fault = await self._fault(request)
        if fault is not None:
            return fault
        try:
            obj = model.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            self.state.rejected.append(str(exc))
            return web.json_response(envelope(status_code=2001, message="invalid object"), status=400)
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
            return web.json_response(envelope(status_code=2000, message="unauthorized"), status=401)
        found = table.get(request.match_info["id"])
        if found is None:
            return web.json_response(envelope(status_code=2000, message="unknown object"), status=404)
        return web.json_response(envelope(found))


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _drop(request: web.Request) -> None:
    """Close the connection without an answer (a reset as the client sees it)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
