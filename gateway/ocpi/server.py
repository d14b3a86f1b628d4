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

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.errors import UpstreamError
from gateway.jsonscan import brackets
from gateway.ocpi.charger import OcpiChargerLink, session_id_of
from gateway.ocpi.client import authorization
from gateway.ocpi.fac import fac_from_outcome
from gateway.ocpi.models import (
    Cdr,
    CommandResult,
    Credentials,
    FiscalData,
    OcpiSession,
    OcpiSessionPatch,
    Terminal,
    TerminalActivation,
    TerminalPatch,
    envelope,
)
from gateway.payments.events import FiscalDataArrived
from gateway.runtime.connections import busy_while_handled
from gateway.store import InboxMessage, JournalEntry, OutboxMessage, Step, Store, TerminalRecord

_LOGGER = logging.getLogger(__name__)
VERSION = "2.3.0"
MAX_LIMIT = 100
MAX_BODY = 256 * 1024  # bytes: the largest object we take (a CDR with its charging periods fits)
MAX_DEPTH = 16  # JSON nesting: OCPI objects are shallow; deeper is an attack or a bug
M = TypeVar("M", bound=BaseModel)


class BadRequest(Exception):
    """A request body we refuse: answered 400 / OCPI 2001 with this message."""


class CredentialsKeeper(Protocol):
    """Owns the registration (the upstream worker): our credentials, rotation, forgetting, and
    the CPO-initiated registration."""

    def ours(self) -> Credentials: ...
    def rotate(self, theirs: Credentials) -> Credentials: ...
    def forget(self) -> None: ...
    async def accept(self, theirs: Credentials) -> Credentials: ...


FISCAL_MODULE = "DEEVPfiscal"  # a custom module: id prefixed with our country code and party id


class PtpServer:
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

    # ---- terminals ----------------------------------------------------------------------------

    def _ocpi_id(self, name: str) -> str:
        return f"{self.site}-{name}"[:36]

    def _terminal_objects(self) -> list[tuple[str, dict[str, Any]]]:
        """(our name, OCPI Terminal JSON) for every terminal the gateway has registered."""
        out = []
        for row in self.store.terminals():
            ocpi = dict(row["data"].get("ocpi", {}))
            reference = ocpi.get("reference") or row["data"].get("terminal_id") or row["id"]
            ocpi.update(terminal_id=self._ocpi_id(row["id"]), reference=reference)
            ocpi["last_updated"] = ocpi.get("last_updated") or row["updated_at"]
            out.append((row["id"], Terminal.model_validate(ocpi).to_json()))
        return out

    def _find(self, ocpi_id: str) -> tuple[str, dict[str, Any]] | None:
        return next(
            ((n, t) for n, t in self._terminal_objects() if t["terminal_id"] == ocpi_id), None
        )

    async def _terminals(self, request: web.Request) -> web.Response:
        return _page(request, [t for _, t in self._terminal_objects()])

    async def _terminal(self, request: web.Request) -> web.Response:
        found = self._find(request.match_info["id"])
        if found is None:
            return _unknown_terminal()
        return web.json_response(envelope(found[1]))

    async def _update(self, request: web.Request) -> web.Response:
        found = self._find(request.match_info["id"])
        if found is None:
            return _unknown_terminal()
        patch = await parse(request, TerminalPatch)
        name, current = found
        changes = patch.model_dump(mode="json", exclude_none=True)
        changes.setdefault("last_updated", self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"))
        self._store(name, {**current, **changes}, f"terminal.{request.method.lower()}", changes)
        return web.json_response(envelope())

    async def _activate(self, request: web.Request) -> web.Response:
        """The CPO activates a terminal it knows by its ``reference`` (the OEM's serial number or
        another mapping); ``terminal_id`` is ours to assign, so it may be absent. The CPO's
        reference is kept and served back from then on."""
        wanted = await parse(request, TerminalActivation)
        found = (
            self._find(wanted.terminal_id)
            if wanted.terminal_id
            else self._by_reference(wanted.reference)
        )
        if found is None:
            what = (
                f"terminal_id {wanted.terminal_id!r}"
                if wanted.terminal_id
                else f"reference {wanted.reference!r}"
            )
            return _error(404, 2000, f"no terminal of ours matches {what}")
        name, current = found
        given = wanted.model_dump(mode="json", exclude_none=True)
        merged = {**current, **given, "terminal_id": current["terminal_id"]}
        if wanted.reference:
            merged["reference"] = wanted.reference
        merged["last_updated"] = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        # D17: activation answers at once; the Terminal is then created on the CPO side (POST, via
        # the outbox).
        announce = {k: v for k, v in merged.items() if k != "last_updated"}
        message = OutboxMessage(
            f"terminal:{merged['terminal_id']}:activated:{uuid.uuid4().hex[:8]}",
            f"terminal:{merged['terminal_id']}",
            "terminal.post",
            announce,
        )
        self._store(name, {**merged, "active": True}, "terminal.activated", given, outbox=[message])
        return web.json_response(envelope())

    def _by_reference(self, reference: str | None) -> tuple[str, dict[str, Any]] | None:
        """Our terminal the CPO's reference names: a reference it gave before, our name, its OCPI
        id or the terminal's own id (ZVT TID)."""
        if not reference:
            return None
        for row in self.store.terminals():
            known = {
                row["data"].get("ocpi", {}).get("reference"),
                row["id"],
                self._ocpi_id(row["id"]),
                row["data"].get("terminal_id"),
            }
            if reference in known:
                return self._find(self._ocpi_id(row["id"]))
        return None

    async def _deactivate(self, request: web.Request) -> web.Response:
        found = self._find(request.match_info["id"])
        if found is None:
            return _unknown_terminal()
        name, current = found
        self._store(name, {**current, "active": False}, "terminal.deactivated", {})
        return web.json_response(envelope())

    def _store(
        self,
        name: str,
        ocpi: dict[str, Any],
        kind: str,
        change: dict[str, Any],
        outbox: list[OutboxMessage] | None = None,
    ) -> None:
        row = next(r for r in self.store.terminals() if r["id"] == name)
        # terminal_id is derived from our name: never stored. The reference is stored only when the
        # CPO gave one (activation); otherwise it is the terminal's TID.
        stored = {k: v for k, v in ocpi.items() if k != "terminal_id"}
        if stored.get("reference") in (row["data"].get("terminal_id"), name):
            stored.pop("reference")
        data = {**row["data"], "ocpi": stored}
        self.store.apply(
            Step(
                f"ocpi:{name}:{uuid.uuid4().hex}",
                terminals=[
                    TerminalRecord(name, row["device"], row["protocol"], row["state"], data)
                ],
                journal=[JournalEntry("terminal", name, kind, change)],
                outbox=outbox or [],
            )
        )

    # ---- receiver: sessions, CDRs, command results -----------------------------------------------

    def _inbox(
        self, request: web.Request, kind: str, payload: dict[str, Any], key: str | None = None
    ) -> bool:
        """Store what the CPO sent, in one step; False if it was stored before. ``key``: the
        object's own identity, when it has one (a CDR): X-Request-ID is a correlation id, and
        two different objects sent under the same one are both kept."""
        message_id = key or request.headers.get("X-Request-ID") or uuid.uuid4().hex
        return self.store.apply(
            Step(
                f"inbox:{message_id}",
                inbox=[InboxMessage(message_id, "cpo", kind, payload)],
                inbox_processed=[message_id],
            )
        )

    async def _session_put(self, request: web.Request) -> web.Response:
        return self._session(request, await parse(request, OcpiSession))

    async def _session_patch(self, request: web.Request) -> web.Response:
        known = self._sessions.get(request.match_info["id"])
        if known is None:
            return web.json_response(
                envelope(status_code=2001, message="PATCH of an unknown session"), status=404
            )
        patch = await parse(request, OcpiSessionPatch)
        try:
            session = OcpiSession.model_validate({**known, **patch.to_json()})
        except ValidationError:
            return _error(400, 2001, "the session patch makes an invalid session")
        return self._session(request, session)

    def _session(self, request: web.Request, session: OcpiSession) -> web.Response:
        data = session.to_json()
        self._sessions[session.id] = data
        # one state of one session: the same object at the same last_updated is the same push
        key = f"session:{session.country_code}:{session.party_id}:{session.id}".upper()
        key += f":{data['last_updated']}"
        if self._inbox(request, "session", data, key) and self.receiver is not None:
            self.receiver.session_pushed(session)
        return web.json_response(envelope())

    async def _cdr(self, request: web.Request) -> web.Response:
        cdr = await parse(request, Cdr)
        key = f"cdr:{cdr.country_code}:{cdr.party_id}:{cdr.id}".upper()  # CiStrings; never changed
        if self._inbox(request, "cdr", cdr.to_json(), key) and self.receiver is not None:
            self.receiver.cdr_pushed(cdr)
        return web.json_response(envelope(), status=201)

    async def _command_result(self, request: web.Request) -> web.Response:
        result = await parse(request, CommandResult)
        command, uid = request.match_info["command"], request.match_info["uid"]
        # one command's result: its own identity is (command, uid), never the X-Request-ID
        key = f"command_result:{command}:{uid}"
        stored = self._inbox(
            request, "command_result", {"command": command, "uid": uid, **result.to_json()}, key
        )
        if stored and self.receiver is not None:
            self.receiver.command_result(command, uid, result.result)
        return web.json_response(envelope())

    async def _fiscal(self, request: web.Request) -> web.Response:
        """Custom module (OCPI has no fiscal field): the invoicing side's receipt lines and
        signature for a session, by its authorization_reference, to print on the terminal."""
        data = await parse(request, FiscalData)
        reference = request.match_info["reference"]
        session_id = session_id_of(reference)
        if session_id is None or self.store.session(session_id) is None:
            return web.json_response(
                envelope(status_code=2000, message="unknown authorization_reference"), status=404
            )
        payload = {"authorization_reference": reference, **data.to_json()}
        # its own identity: the session's reference and what it says (a corrected receipt is a
        # new object), never the X-Request-ID, a correlation id
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
        message_id = f"fiscal:{reference}:{digest}"
        if self._inbox(request, "fiscal", payload, message_id) and self.fiscal:
            self.fiscal(
                FiscalDataArrived(
                    session_id,
                    message_id,
                    tuple(data.lines),
                    data.invoice_reference_id,
                    data.invoice_url,
                    tuple(sorted((data.fields or {}).items())),
                )
            )
        return web.json_response(envelope())

    # ---- financial advice confirmations -------------------------------------------------------

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


def _unknown_terminal() -> web.Response:
    return web.json_response(envelope(status_code=2000, message="unknown terminal"), status=404)


def _error(http_status: int, status_code: int, message: str) -> web.Response:
    return web.json_response(envelope(status_code=status_code, message=message), status=http_status)


async def parse(request: web.Request, model: type[M]) -> M:
    """The request body as ``model`` (``decode_body``); aiohttp refuses more than MAX_BODY (413)."""
    return decode_body(await request.read(), model)


def decode_body(raw: bytes, model: type[M]) -> M:
    """``raw`` as ``model``, strictly: JSON types as the spec types them, no deeper than
    MAX_DEPTH. BadRequest otherwise, and nothing else (the fuzz campaign holds it to that)."""
    if not raw:
        raise BadRequest("a JSON body is required")
    if _too_deep(raw, MAX_DEPTH):
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"invalid {model.__name__}: {where}: {first['msg']}") from None


def _too_deep(raw: bytes, limit: int) -> bool:
    return any(depth > limit for _, depth in brackets(raw.decode("utf-8", "replace")))


def _page(request: web.Request, objects: list[dict[str, Any]]) -> web.Response:
    q = request.query
    try:
        offset = int(q.get("offset", "0"))
        limit = min(int(q.get("limit", str(MAX_LIMIT))), MAX_LIMIT)
        date_from = q.get("date_from")
        date_to = q.get("date_to")
        start = datetime.fromisoformat(date_from) if date_from else None
        end = datetime.fromisoformat(date_to) if date_to else None
    except ValueError:
        return web.json_response(
            envelope(status_code=2001, message="bad offset, limit or date"), status=400
        )
    if offset < 0 or limit < 1:
        return web.json_response(
            envelope(status_code=2001, message="bad offset or limit"), status=400
        )
    selected = [
        o
        for o in objects
        if (start is None or datetime.fromisoformat(o["last_updated"]) >= start)
        and (end is None or datetime.fromisoformat(o["last_updated"]) < end)
    ]
    page = selected[offset : offset + limit]
    headers = {"X-Total-Count": str(len(selected)), "X-Limit": str(limit)}
    if offset + limit < len(selected):
        nxt = request.url.update_query({"offset": str(offset + limit), "limit": str(limit)})
        headers["Link"] = f'<{nxt}>; rel="next"'
    return web.json_response(envelope(page), headers=headers)
