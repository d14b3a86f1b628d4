"""The embedded CPO: a small but strict OCPI 2.3.0 CPO for the payments flow.

Serves versions and version details, the credentials registration (token A → token C), and
the payments receiver (Financial Advice Confirmations and Terminals: POST and GET by id).
It behaves like the strictest real CPO: during a registration it calls the PTP's versions and
version details back with the PTP's token B before it answers (3001 if that fails); every
request must carry ``X-Request-ID`` and ``X-Correlation-ID``, and the PTP must echo them on the
callbacks; every object is validated strictly (JSON types, lengths, enums, DateTime, the 2.3.0
Price) and unknown fields from the PTP are refused. It can register with the PTP itself
(``register_with``: CPO-initiated). It records what it stored, and can be told to fail the next
requests (``faults``): ``http500``, ``retry_after``, ``ocpi2001``, ``ocpi3001``, ``slow``
(answer after ``slow_s``), ``reset_after_store`` (store, then drop the connection without an
answer), ``drop`` (drop before storing). ``quirks`` make it deviate as real peers do:
``auth403`` (403 where 401 is meant), ``plain422`` (refusals as HTTP 422 with a non-OCPI body),
``redirect_slash`` (collections only at a trailing-slash URL; the bare one redirects),
``put_terminals`` (Terminals only by PUT on the object's URL), ``no_partial_success`` (refuses
PARTIAL_SUCCESS FACs), ``require_website`` (refuses credentials without business_details.website),
``foreign_endpoints`` (its version details name another host). ``start(tls=…)`` serves https.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import ssl
import uuid
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
QUIRKS = (
    "auth403",
    "plain422",
    "redirect_slash",
    "put_terminals",
    "no_partial_success",
    "require_website",
    "foreign_endpoints",
)


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
    fiscal_lines: list[str] = field(
        default_factory=list
    )  # sent after the CDR (custom module DEEVPfiscal)
    # The invoicing system's answer to a FAC (local flow): "" none; "signed" an invoice with ZKI and
    # JIR (Croatia); "zki_only" the tax authority is down (ZKI now, JIR later); "invoice" no
    # signature.
    fiscal_on_fac: str = ""
    fiscal_delay_s: float = 0.0
    fiscal_sent: list[dict[str, Any]] = field(default_factory=list)
    receipts: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # DEEVPfiscal PUTs, by reference
    refunds: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # DEEVPrecon refund PUTs, by id
    reports: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # DEEVPrecon reconciliation reports
    locations: list[dict[str, Any]] = field(default_factory=list)
    callback: bool = True  # call the PTP's versions back during registration
    require_ids: bool = True  # refuse requests without X-Request-ID / X-Correlation-ID
    quirks: set[str] = field(default_factory=set)
    down: bool = False  # an outage: every request is answered 503 until it is over
    callbacks: list[str] = field(
        default_factory=list
    )  # what the registration callback saw, for tests
    ptp_token: str | None = None  # the PTP's token B as the CPO holds it (for its pushes)
    ptp_versions_url: str | None = None


class CpoSimulator:
    def __init__(self, state: CpoState | None = None) -> None:
        self.state = state or CpoState()
        self._tasks: set[asyncio.Task[None]] = set()
        self.base = ""
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._strict])
        r = app.router
        r.add_get("/ocpi/versions", self._versions)
        r.add_get(f"/ocpi/{VERSION}", self._details)
        r.add_post(f"/ocpi/{VERSION}/credentials", self._register)
        r.add_put(f"/ocpi/{VERSION}/credentials", self._rotate)
        r.add_delete(f"/ocpi/{VERSION}/credentials", self._unregister)
        pay = f"/ocpi/cpo/{VERSION}/payments"
        r.add_post(f"{pay}/financial-advice-confirmations", self._post_fac)
        r.add_post(f"{pay}/financial-advice-confirmations/", self._post_fac)
        r.add_get(f"{pay}/financial-advice-confirmations/{{id}}", self._get_fac)
        r.add_post(f"/ocpi/cpo/{VERSION}/commands/{{command}}", self._command)
        r.add_get(f"/ocpi/cpo/{VERSION}/tariffs", self._list_tariffs)
        r.add_get(f"/ocpi/cpo/{VERSION}/locations", self._list_locations)
        r.add_post(f"{pay}/terminals", self._post_terminal)
        r.add_post(f"{pay}/terminals/", self._post_terminal)
        r.add_get(f"{pay}/terminals/{{id}}", self._get_terminal)
        r.add_put(f"{pay}/terminals/{{id}}", self._put_terminal)
        r.add_put(f"/ocpi/cpo/{VERSION}/DEEVPfiscal/{{reference}}", self._put_receipt)
        r.add_put(f"/ocpi/cpo/{VERSION}/DEEVPrecon/{{what}}/{{id}}", self._put_recon)
        return app

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

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"{'https' if tls else 'http'}://{host}:{bound}"
        return self.base

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

    # ---- endpoints -------------------------------------------------------------------------

    async def _versions(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return self._unauthorized()
        return web.json_response(
            envelope([{"version": VERSION, "url": f"{self.base}/ocpi/{VERSION}"}])
        )

    async def _details(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return self._unauthorized()
        base = self._endpoint_base()
        endpoints = [
            {
                "identifier": "credentials",
                "role": "RECEIVER",
                "url": f"{base}/ocpi/{VERSION}/credentials",
            },
            {
                "identifier": "payments",
                "role": "RECEIVER",
                "url": f"{base}/ocpi/cpo/{VERSION}/payments",
            },
            {
                "identifier": "commands",
                "role": "RECEIVER",
                "url": f"{base}/ocpi/cpo/{VERSION}/commands",
            },
            {
                "identifier": "tariffs",
                "role": "SENDER",
                "url": f"{base}/ocpi/cpo/{VERSION}/tariffs",
            },
            {
                "identifier": "locations",
                "role": "SENDER",
                "url": f"{base}/ocpi/cpo/{VERSION}/locations",
            },
        ]
        if "no_custom_modules" not in self.state.quirks:
            endpoints.append(
                {
                    "identifier": "DEEVPrecon",
                    "role": "RECEIVER",
                    "url": f"{base}/ocpi/cpo/{VERSION}/DEEVPrecon",
                }
            )
        if (
            "no_fiscal_module" not in self.state.quirks
            and "no_custom_modules" not in self.state.quirks
        ):
            endpoints.append(
                {
                    "identifier": "DEEVPfiscal",
                    "role": "RECEIVER",
                    "url": f"{base}/ocpi/cpo/{VERSION}/DEEVPfiscal",
                }
            )
        return web.json_response(envelope({"version": VERSION, "endpoints": endpoints}))

    async def _register(self, request: web.Request, *, rotating: bool = False) -> web.Response:
        if not rotating and not self._allowed(request, registration=True):
            return self._unauthorized()
        try:
            creds = await self._object(request, Credentials)
        except (ValidationError, ValueError) as exc:
            return self._refuse(f"invalid credentials: {exc}")
        if "require_website" in self.state.quirks and not any(
            r.business_details.website for r in creds.roles
        ):
            return self._refuse("business_details.website is required by this CPO")
        if self.state.callback:
            problem = await self._call_back(creds, request.headers.get("X-Correlation-ID", ""))
            if problem:
                return self._refuse(
                    f"unable to use the client's API: {problem}", status=200, code=3001
                )
        self.state.registered.append(creds.to_json())
        self.state.ptp_token, self.state.ptp_versions_url = creds.token, creds.url
        token_c = secrets.token_hex(16)
        self.state.tokens.add(token_c)
        role = {
            "role": "CPO",
            "party_id": "CPO",
            "country_code": "DE",
            "business_details": {"name": "Embedded CPO"},
        }
        reply = {"token": token_c, "url": self.versions_url, "roles": [role]}
        return web.json_response(envelope(reply))

    async def _call_back(self, creds: Credentials, correlation_id: str) -> str | None:
        """What a strict CPO does before answering a registration: GET the PTP's versions and its
        2.3.0 details with the token B it was just given; the ids must come back echoed."""
        try:
            async with aiohttp.ClientSession(headers=_auth(creds.token)) as http:
                versions = await self._get_checked(http, creds.url, correlation_id)
                chosen = next((v for v in versions if v.get("version") == VERSION), None)
                if chosen is None:
                    return f"no OCPI {VERSION} at {creds.url}"
                await self._get_checked(http, chosen["url"], correlation_id)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
            self.state.callbacks.append(f"failed: {exc}")
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _get_checked(self, http: aiohttp.ClientSession, url: str, correlation_id: str) -> Any:
        ids = {
            "X-Request-ID": secrets.token_hex(8),
            "X-Correlation-ID": correlation_id or secrets.token_hex(8),
        }
        async with http.get(url, headers=ids, timeout=aiohttp.ClientTimeout(total=5)) as r:
            body = await r.json()
            if r.status != 200 or body.get("status_code") != 1000:
                raise ValueError(f"GET {url}: HTTP {r.status}, OCPI {body.get('status_code')}")
            echoed = {k: r.headers.get(k) for k in ids}
            if echoed != ids:
                raise ValueError(f"GET {url}: message ids not echoed ({echoed})")
        self.state.callbacks.append(url)
        return body["data"]

    async def register_with(self, ptp_versions_url: str, token_a: str) -> dict[str, Any]:
        """CPO-initiated registration: with the token A the PTP gave us, discover its credentials
        endpoint and POST ours; its answer carries the token B we use to call it."""
        correlation = secrets.token_hex(8)
        async with aiohttp.ClientSession(headers=_auth(token_a)) as http:
            versions = await self._get_checked(http, ptp_versions_url, correlation)
            details = await self._get_checked(http, versions[0]["url"], correlation)
            url = next(e["url"] for e in details["endpoints"] if e["identifier"] == "credentials")
            token_c = secrets.token_hex(16)
            self.state.tokens.add(token_c)
            ours = {
                "token": token_c,
                "url": self.versions_url,
                "roles": [
                    {
                        "role": "CPO",
                        "party_id": "CPO",
                        "country_code": "DE",
                        "business_details": {"name": "Embedded CPO"},
                    }
                ],
            }
            ids = {"X-Request-ID": secrets.token_hex(8), "X-Correlation-ID": correlation}
            async with http.post(url, json=ours, headers=ids) as r:
                body = await r.json()
        if body.get("status_code") != 1000:
            raise ValueError(f"the PTP refused our registration: {body}")
        creds = Credentials.model_validate(body["data"])
        self.state.registered.append(creds.to_json())
        self.state.ptp_token, self.state.ptp_versions_url = creds.token, creds.url
        return dict(body["data"])

    async def _rotate(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token not in self.state.tokens:
            return web.json_response(
                envelope(status_code=2000, message="not registered"), status=405
            )
        self.state.tokens.discard(token)
        return await self._register(request, rotating=True)

    async def _unregister(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token not in self.state.tokens:
            return web.json_response(
                envelope(status_code=2000, message="not registered"), status=405
            )
        self.state.tokens.discard(token)
        return web.json_response(envelope())

    async def _command(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return self._unauthorized()
        command = request.match_info["command"]
        self.state.commands.append(command)
        try:
            if command == "START_SESSION":
                start = await self._object(request, StartSession)
                self._tasks.add(asyncio.create_task(self._run_session(start)))
            elif command == "STOP_SESSION":
                self.state.stop_requested.add((await self._object(request, StopSession)).session_id)
            else:
                return web.json_response(envelope({"result": "NOT_SUPPORTED", "timeout": 0}))
        except (ValidationError, ValueError) as exc:
            return self._refuse(f"invalid command: {exc}")
        return web.json_response(envelope({"result": "ACCEPTED", "timeout": 30}))

    async def _run_session(self, start: StartSession) -> None:
        """Charge, pushing Session updates to the PTP, then send the CDR and the CommandResult."""
        headers = _auth(self.state.ptp_token or "")
        async with aiohttp.ClientSession(headers=headers, trace_configs=[_with_ids()]) as http:
            endpoints = await self._ptp_endpoints(http, self.state.ptp_versions_url or "")
            sid = f"CPO-{secrets.token_hex(6)}"
            now = datetime.now(UTC)
            session = {
                "country_code": "DE",
                "party_id": "CPO",
                "id": sid,
                "start_date_time": _ts(now),
                "kwh": 0,
                "authorization_reference": start.authorization_reference,
                "location_id": start.location_id,
                "evse_uid": start.evse_uid or "EVSE",
                "currency": "EUR",
                "status": "ACTIVE",
                "last_updated": _ts(now),
            }
            url = f"{endpoints['sessions']}/DE/CPO/{sid}"
            await http.put(url, json=session)
            await http.post(start.response_url, json={"result": "ACCEPTED"})
            kwh = Decimal(0)
            while kwh < self.state.session_kwh and sid not in self.state.stop_requested:
                await asyncio.sleep(self.state.push_interval_s)
                kwh = min(kwh + self.state.kwh_step, self.state.session_kwh)
                await http.patch(
                    url, json={"kwh": float(kwh), "last_updated": _ts(datetime.now(UTC))}
                )
            end = datetime.now(UTC)
            await http.patch(
                url,
                json={"status": "COMPLETED", "end_date_time": _ts(end), "last_updated": _ts(end)},
            )
            cost = (kwh * self.state.price_per_kwh).quantize(Decimal("0.01"))
            cdr = {
                "country_code": "DE",
                "party_id": "CPO",
                "id": f"CDR-{sid}",
                "start_date_time": session["start_date_time"],
                "end_date_time": _ts(end),
                "session_id": sid,
                "authorization_reference": start.authorization_reference,
                "currency": "EUR",
                "total_cost": {"before_taxes": float(cost)},
                "total_energy": float(kwh),
                "invoice_reference_id": f"INV-{sid}",
                "last_updated": _ts(end),
            }
            self.state.cdrs.append(cdr)
            await http.post(endpoints["cdrs"], json=cdr)
            if self.state.fiscal_lines and "DEEVPfiscal" in endpoints:
                fiscal = {
                    "lines": [*self.state.fiscal_lines, f"Invoice {cdr['invoice_reference_id']}"],
                    "invoice_reference_id": cdr["invoice_reference_id"],
                }
                await http.put(
                    f"{endpoints['DEEVPfiscal']}/{start.authorization_reference}", json=fiscal
                )

    async def _ptp_endpoints(
        self, http: aiohttp.ClientSession, versions_url: str
    ) -> dict[str, str]:
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
            return self._unauthorized()
        offset = int(request.query.get("offset", "0"))
        headers = {"X-Total-Count": str(len(objects)), "X-Limit": "1"}
        if offset + 1 < len(objects):
            headers["Link"] = (
                f'<{request.url.with_query({"offset": str(offset + 1), "limit": "1"})}>; rel="next"'
            )
        return web.json_response(envelope(objects[offset : offset + 1]), headers=headers)

    async def _post_fac(self, request: web.Request) -> web.Response:
        known = set(self.state.facs)
        response = await self._post(
            request, FinancialAdviceConfirmation, self.state.facs, "id", self.state.fac_posts
        )
        new = [fac for fid, fac in self.state.facs.items() if fid not in known]
        if self.state.fiscal_on_fac and new and new[0]["capture_status_code"] != "FAILED":
            task = asyncio.create_task(self._send_fiscal(new[0]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return response

    async def _send_fiscal(self, fac: dict[str, Any]) -> None:
        """The invoicing system signs the receipt for the captured amount and sends it to the
        PTP."""
        await asyncio.sleep(self.state.fiscal_delay_s)
        reference = fac["authorization_reference"]
        number = len(self.state.fiscal_sent) + 1
        body: dict[str, Any] = {
            "invoice_reference_id": f"{number}/EVP1/1",
            "invoice_url": f"{self.base}/invoices/{reference}",
        }
        if self.state.fiscal_on_fac in ("signed", "zki_only"):
            issued = datetime.now(UTC).replace(second=0, microsecond=0)
            zki = hashlib.md5(f"{reference}{number}".encode()).hexdigest()  # noqa: S324 - the ZKI is an MD5 by law
            fields = {"zki": zki, "issued_at": issued.isoformat()}
            if self.state.fiscal_on_fac == "signed":
                fields["jir"] = str(uuid.uuid5(uuid.NAMESPACE_URL, reference))
            body["fields"] = fields
        headers = _auth(self.state.ptp_token or "")
        async with aiohttp.ClientSession(headers=headers, trace_configs=[_with_ids()]) as http:
            endpoints = await self._ptp_endpoints(http, self.state.ptp_versions_url or "")
            async with http.put(f"{endpoints['DEEVPfiscal']}/{reference}", json=body) as r:
                body["answer"] = r.status
        self.state.fiscal_sent.append(body)

    async def _put_recon(self, request: web.Request) -> web.Response:
        """Refunds and reconciliation reports (our side of the custom module DEEVPrecon)."""
        if not self._allowed(request):
            return self._unauthorized()
        what, ident = request.match_info["what"], request.match_info["id"]
        try:
            body = await request.json()
        except ValueError:
            return self._refuse("DEEVPrecon: not JSON")
        if (
            what == "refunds"
            and isinstance(body, dict)
            and isinstance(body.get("amount_minor"), int)
        ):
            self.state.refunds.setdefault(ident, []).append(body)
        elif (
            what == "reports" and isinstance(body, dict) and isinstance(body.get("findings"), list)
        ):
            self.state.reports[ident] = body
        else:
            return self._refuse(f"DEEVPrecon: not a valid {what} object")
        return web.json_response(envelope())

    async def _put_receipt(self, request: web.Request) -> web.Response:
        """What the driver's receipt said (our side of the custom module DEEVPfiscal)."""
        if not self._allowed(request):
            return self._unauthorized()
        try:
            body = await request.json()
        except ValueError:
            return self._refuse("receipt: not JSON")
        if not isinstance(body, dict) or body.get("state") not in (
            "complete",
            "pending",
            "delivered_late",
        ):
            return self._refuse("receipt: state must be complete, pending or delivered_late")
        self.state.receipts.setdefault(request.match_info["reference"], []).append(body)
        return web.json_response(envelope())

    async def _get_fac(self, request: web.Request) -> web.Response:
        return self._get(request, self.state.facs)

    async def _post_terminal(self, request: web.Request) -> web.Response:
        if "put_terminals" in self.state.quirks:
            return self._refuse(
                "this CPO takes Terminals by PUT {terminals}/{terminal_id}", status=405, code=2000
            )
        return await self._post(request, Terminal, self.state.terminals, "terminal_id", None)

    async def _put_terminal(self, request: web.Request) -> web.Response:
        if "put_terminals" not in self.state.quirks:
            return self._refuse(
                "PUT is not the Terminals receiver method here; POST the Terminal", 405, 2000
            )
        response = await self._post(request, Terminal, self.state.terminals, "terminal_id", None)
        stored = self.state.terminals.get(request.match_info["id"])
        if response.status in (200, 201) and stored is None:
            return self._refuse("terminal_id in the body differs from the URL")
        return response

    async def _get_terminal(self, request: web.Request) -> web.Response:
        return self._get(request, self.state.terminals)

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
