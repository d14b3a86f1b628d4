"""The OCPI endpoints the gateway serves to the CPO (the PTP's Sender interface).

``/ocpi/versions`` and ``/ocpi/2.3.0`` (discovery); payments Sender:
``terminals`` (GET list/one, PUT, PATCH: the CPO assigns locations/EVSEs; POST ``activate``,
POST ``{id}/deactivate``) and ``financial-advice-confirmations`` (GET list/one). Lists are
paginated (``date_from`` inclusive, ``date_to`` exclusive on ``last_updated``; ``offset``,
``limit``) with ``Link``, ``X-Total-Count`` and ``X-Limit``. Every request must carry our token
B (from the registration, decrypted once at start); every change is a store step.

Every response — errors too — echoes the request's ``X-Request-ID`` and ``X-Correlation-ID``.
Every body is parsed strictly (JSON types as the spec types them: a DateTime is an RFC 3339
string, never a number), within a size and nesting limit, and a bad one answers the OCPI
envelope with 2001 and HTTP 400 — never a 500. Before the gateway is registered the server
already answers with the token B it is about to send (the CPO calls back during
registration); in CPO-initiated registration it accepts the CPO's credentials POST with the
token A we gave it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from gateway.errors import UpstreamError
from gateway.ocpi.charger import OcpiChargerLink
from gateway.ocpi.client import authorization
from gateway.ocpi.fac import fac_from_outcome
from gateway.ocpi.models import Credentials, envelope
from gateway.ocpi.server_bodies import MAX_BODY, BadRequest, _error, _page, parse
from gateway.ocpi.server_receiver import PushReceiver
from gateway.ocpi.server_terminals import TerminalsSender
from gateway.payments.events import FiscalDataArrived
from gateway.runtime.connections import busy_while_handled
from gateway.store import Store

_LOGGER = logging.getLogger(__name__)
VERSION = "2.3.0"


class CredentialsKeeper(Protocol):
    """Owns the registration (the upstream worker): our credentials, rotation, forgetting, and
    the CPO-initiated registration."""

    def ours(self) -> Credentials: ...
    def rotate(self, theirs: Credentials) -> Credentials: ...
    def forget(self) -> None: ...
    async def accept(self, theirs: Credentials) -> Credentials: ...


FISCAL_MODULE = "DEEVPfiscal"  # a custom module: id prefixed with our country code and party id


class PtpServer(TerminalsSender, PushReceiver):
    def __init__(
        self,
        store: Store,
        token_b: str | Iterable[str],
        base_url: str,
        site: str,
        clock: Callable[[], datetime],
        receiver: OcpiChargerLink | None = None,
        fiscal: Callable[[FiscalDataArrived], None] | None = None,
        credentials: CredentialsKeeper | None = None,
        registration_token: str | None = None,
    ) -> None:
        self.store, self.site, self.clock, self.receiver, self.fiscal = (
            store,
            site,
            clock,
            receiver,
            fiscal,
        )
        self._sessions: dict[str, dict[str, Any]] = {}  # the last full Session per id, for PATCH
        self.credentials = credentials
        tokens = [token_b] if isinstance(token_b, str) else list(token_b)
        self._auth = {authorization(t) for t in tokens}
        # Token A, given to the CPO out of band: good for nothing but its credentials POST.
        self._registration_auth = authorization(registration_token) if registration_token else None
        self.base = base_url.rstrip("/")

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[busy_while_handled, self._ids, self._authenticate],
            client_max_size=MAX_BODY,
        )
        r = app.router
        pay = f"/ocpi/ptp/{VERSION}/payments"
        r.add_get("/ocpi/versions", self._versions)
        r.add_get(f"/ocpi/{VERSION}", self._details)
        r.add_get(f"/ocpi/{VERSION}/credentials", self._credentials_get)
        r.add_post(f"/ocpi/{VERSION}/credentials", self._credentials_post)
        r.add_put(f"/ocpi/{VERSION}/credentials", self._credentials_put)
        r.add_delete(f"/ocpi/{VERSION}/credentials", self._credentials_delete)
        r.add_get(f"{pay}/terminals", self._terminals)
        r.add_post(f"{pay}/terminals/activate", self._activate)
        r.add_get(f"{pay}/terminals/{{id}}", self._terminal)
        r.add_put(f"{pay}/terminals/{{id}}", self._update)
        r.add_patch(f"{pay}/terminals/{{id}}", self._update)
        r.add_post(f"{pay}/terminals/{{id}}/deactivate", self._deactivate)
        r.add_get(f"{pay}/financial-advice-confirmations", self._facs)
        r.add_get(f"{pay}/financial-advice-confirmations/{{id}}", self._fac)
        ptp = f"/ocpi/ptp/{VERSION}"
        r.add_put(f"{ptp}/sessions/{{cc}}/{{party}}/{{id}}", self._session_put)
        r.add_patch(f"{ptp}/sessions/{{cc}}/{{party}}/{{id}}", self._session_patch)
        r.add_post(f"{ptp}/cdrs", self._cdr)
        r.add_post(f"{ptp}/commands/{{command}}/{{uid}}", self._command_result)
        r.add_put(f"{ptp}/{FISCAL_MODULE}/{{reference}}", self._fiscal)
        return app

    @web.middleware
    async def _ids(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Echo the message ids on every answer, errors included; nothing escapes as a bare 500."""
        request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        correlation_id = request.headers.get("X-Correlation-ID") or request_id
        try:
            response: web.StreamResponse = await handler(request)
        except BadRequest as exc:
            response = _error(400, 2001, str(exc))
        except web.HTTPException as exc:  # no such route (404), method (405), body too large (413)
            response = _error(exc.status, 2001 if exc.status == 413 else 2000, exc.reason)
        except Exception:
            _LOGGER.exception(
                "ocpi.server_error", extra={"path": request.path, "request_id": request_id}
            )
            response = _error(500, 3000, "internal error; the request was not processed")
        response.headers["X-Request-ID"] = request_id
        response.headers["X-Correlation-ID"] = correlation_id
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        # Token A opens discovery and the credentials POST, nothing else (credentials module).
        registering = (request.method, request.path) in (
            ("POST", f"/ocpi/{VERSION}/credentials"),
            ("GET", "/ocpi/versions"),
            ("GET", f"/ocpi/{VERSION}"),
        )
        own_auth = len(request.match_info.apps) > 1  # a mounted sub-app: acquirer webhooks
        if (
            not own_auth
            and auth not in self._auth
            and not (registering and auth and auth == self._registration_auth)
        ):
            return _error(401, 2000, "unknown token")
        response: web.StreamResponse = await handler(request)
        return response

    # ---- discovery --------------------------------------------------------------------------

    async def _versions(self, _request: web.Request) -> web.Response:
        return web.json_response(
            envelope([{"version": VERSION, "url": f"{self.base}/ocpi/{VERSION}"}])
        )

    async def _details(self, _request: web.Request) -> web.Response:
        ptp = f"{self.base}/ocpi/ptp/{VERSION}"
        endpoints = [
            {
                "identifier": "credentials",
                "role": "RECEIVER",
                "url": f"{self.base}/ocpi/{VERSION}/credentials",
            },
            {"identifier": "payments", "role": "SENDER", "url": f"{ptp}/payments"},
            {"identifier": "sessions", "role": "RECEIVER", "url": f"{ptp}/sessions"},
            {"identifier": "cdrs", "role": "RECEIVER", "url": f"{ptp}/cdrs"},
            {"identifier": "commands", "role": "SENDER", "url": f"{ptp}/commands"},
            {"identifier": FISCAL_MODULE, "role": "RECEIVER", "url": f"{ptp}/{FISCAL_MODULE}"},
        ]
        return web.json_response(envelope({"version": VERSION, "endpoints": endpoints}))

    def set_token(self, token_b: str) -> None:
        """From now on only this token is ours (after a rotation or a registration)."""
        self._auth = {authorization(token_b)}
        self._registration_auth = None

    def accept_token(self, token_b: str) -> None:
        """Also accept this token (a rotation we start: the CPO may call back with it first)."""
        self._auth.add(authorization(token_b))

    # ---- credentials: the CPO reads, rotates or ends our registration -------------------------

    async def _credentials_get(self, _request: web.Request) -> web.Response:
        if self.credentials is None:
            return web.json_response(
                envelope(status_code=2000, message="not registered"), status=405
            )
        return web.json_response(envelope(self.credentials.ours().to_json()))

    async def _credentials_post(self, request: web.Request) -> web.Response:
        """CPO-initiated registration: the CPO sends its credentials with our token A; we read its
        versions with its token, then answer with the token it will use to call us."""
        if self.credentials is None or self._registration_auth is None:
            return _error(405, 2000, "already registered: use PUT to update the credentials")
        theirs = await parse(request, Credentials)
        try:
            ours = await self.credentials.accept(theirs)
        except UpstreamError as exc:
            return _error(200, 3001, f"unable to use your API: {exc}")
        self.set_token(ours.token)
        return web.json_response(envelope(ours.to_json()))

    async def _credentials_put(self, request: web.Request) -> web.Response:
        if self.credentials is None:
            return web.json_response(
                envelope(status_code=2000, message="not registered"), status=405
            )
        theirs = await parse(request, Credentials)
        ours = self.credentials.rotate(theirs)
        self.set_token(ours.token)
        return web.json_response(envelope(ours.to_json()))

    async def _credentials_delete(self, _request: web.Request) -> web.Response:
        if self.credentials is None:
            return web.json_response(
                envelope(status_code=2000, message="not registered"), status=405
            )
        self.credentials.forget()
        self.set_token(uuid.uuid4().hex)  # nothing the CPO holds is accepted any more
        return web.json_response(envelope())

    def _fac_objects(self) -> list[dict[str, Any]]:
        """Built from the outcome messages the engine wrote upstream (the outbox), not from the
        engine's own session records: the server reads what was sent, in the form it was sent."""
        out = []
        for message in self.store.outbox.list(kind="session.outcome"):
            fac = fac_from_outcome(dict(message.payload), message.created_at)
            if fac is not None:
                out.append(fac.to_json())
        return sorted(out, key=lambda f: (f["last_updated"], f["id"]))

    async def _facs(self, request: web.Request) -> web.Response:
        return _page(request, self._fac_objects())

    async def _fac(self, request: web.Request) -> web.Response:
        found = next((f for f in self._fac_objects() if f["id"] == request.match_info["id"]), None)
        if found is None:
            return web.json_response(
                envelope(status_code=2000, message="unknown financial advice confirmation"),
                status=404,
            )
        return web.json_response(envelope(found))
