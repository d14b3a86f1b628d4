"""The OCPI endpoints the gateway serves to the CPO (the PTP's Sender interface).

``/ocpi/versions`` and ``/ocpi/2.3.0`` (discovery); payments Sender:
``terminals`` (GET list/one, PUT, PATCH: the CPO assigns locations/EVSEs; POST ``activate``,
POST ``{id}/deactivate``) and ``financial-advice-confirmations`` (GET list/one). Lists are
paginated (``date_from`` inclusive, ``date_to`` exclusive on ``last_updated``; ``offset``,
``limit``) with ``Link``, ``X-Total-Count`` and ``X-Limit``. Every request must carry our token
B (from the registration, decrypted once at start); every change is a store step.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

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
    TerminalPatch,
    envelope,
)
from gateway.payments.record import from_json
from gateway.payments.session import outcome_payload
from gateway.store import InboxMessage, JournalEntry, OutboxMessage, Step, Store, TerminalRecord

VERSION = "2.3.0"
MAX_LIMIT = 100


class CredentialsKeeper(Protocol):
    """Owns the registration (the upstream worker): our credentials, rotation, forgetting."""

    def ours(self) -> Credentials: ...
    def rotate(self, theirs: Credentials) -> Credentials: ...
    def forget(self) -> None: ...


FISCAL_MODULE = "DEEVPfiscal"  # a custom module: id prefixed with our country code and party id


class PtpServer:
    def __init__(
        self,
        store: Store,
        token_b: str,
        base_url: str,
        site: str,
        clock: Callable[[], datetime],
        receiver: OcpiChargerLink | None = None,
        fiscal: Callable[[str, tuple[str, ...], str], None] | None = None,
        credentials: CredentialsKeeper | None = None,
    ) -> None:
        self.store, self.site, self.clock, self.receiver, self.fiscal = store, site, clock, receiver, fiscal
        self._sessions: dict[str, dict[str, Any]] = {}  # the last full Session per id, for PATCH
        self.credentials = credentials
        self._auth = authorization(token_b)
        self.base = base_url.rstrip("/")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        r = app.router
        pay = f"/ocpi/ptp/{VERSION}/payments"
        r.add_get("/ocpi/versions", self._versions)
        r.add_get(f"/ocpi/{VERSION}", self._details)
        r.add_get(f"/ocpi/{VERSION}/credentials", self._credentials_get)
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
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != self._auth:
            return web.json_response(envelope(status_code=2000, message="unknown token"), status=401)
        response: web.StreamResponse = await handler(request)
        return response

    # ---- discovery --------------------------------------------------------------------------

    async def _versions(self, _request: web.Request) -> web.Response:
        return web.json_response(envelope([{"version": VERSION, "url": f"{self.base}/ocpi/{VERSION}"}]))

    async def _details(self, _request: web.Request) -> web.Response:
        ptp = f"{self.base}/ocpi/ptp/{VERSION}"
        endpoints = [
            {"identifier": "credentials", "role": "RECEIVER", "url": f"{self.base}/ocpi/{VERSION}/credentials"},
            {"identifier": "payments", "role": "SENDER", "url": f"{ptp}/payments"},
            {"identifier": "sessions", "role": "RECEIVER", "url": f"{ptp}/sessions"},
            {"identifier": "cdrs", "role": "RECEIVER", "url": f"{ptp}/cdrs"},
            {"identifier": "commands", "role": "SENDER", "url": f"{ptp}/commands"},
            {"identifier": FISCAL_MODULE, "role": "RECEIVER", "url": f"{ptp}/{FISCAL_MODULE}"},
        ]
        return web.json_response(envelope({"version": VERSION, "endpoints": endpoints}))

    def set_token(self, token_b: str) -> None:
        """From now on only this token is ours (after a rotation)."""
        self._auth = authorization(token_b)

    # ---- credentials: the CPO reads, rotates or ends our registration -------------------------

    async def _credentials_get(self, _request: web.Request) -> web.Response:
        if self.credentials is None:
            return web.json_response(envelope(status_code=2000, message="not registered"), status=405)
        return web.json_response(envelope(self.credentials.ours().to_json()))

    async def _credentials_put(self, request: web.Request) -> web.Response:
        if self.credentials is None:
            return web.json_response(envelope(status_code=2000, message="not registered"), status=405)
        try:
            theirs = Credentials.model_validate(await _body(request))
        except ValidationError:
            return web.json_response(envelope(status_code=2001, message="invalid credentials"), status=400)
        ours = self.credentials.rotate(theirs)
        self.set_token(ours.token)
        return web.json_response(envelope(ours.to_json()))

    async def _credentials_delete(self, _request: web.Request) -> web.Response:
        if self.credentials is None:
            return web.json_response(envelope(status_code=2000, message="not registered"), status=405)
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
            ocpi.update(terminal_id=self._ocpi_id(row["id"]), reference=row["data"].get("terminal_id") or row["id"])
            ocpi["last_updated"] = ocpi.get("last_updated") or row["updated_at"]
            out.append((row["id"], Terminal.model_validate(ocpi).to_json()))
        return out

    def _find(self, ocpi_id: str) -> tuple[str, dict[str, Any]] | None:
        return next(((n, t) for n, t in self._terminal_objects() if t["terminal_id"] == ocpi_id), None)

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
        try:
            patch = TerminalPatch.model_validate(await request.json())
        except (ValidationError, ValueError):
            return web.json_response(envelope(status_code=2001, message="invalid terminal fields"), status=400)
        name, current = found
        changes = patch.model_dump(mode="json", exclude_none=True)
        changes.setdefault("last_updated", self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"))
        self._store(name, {**current, **changes}, f"terminal.{request.method.lower()}", changes)
        return web.json_response(envelope())

    async def _activate(self, request: web.Request) -> web.Response:
        try:
            wanted = Terminal.model_validate(await request.json())
        except (ValidationError, ValueError):
            return web.json_response(envelope(status_code=2001, message="invalid terminal"), status=400)
        found = self._find(wanted.terminal_id)
        if found is None:
            return _unknown_terminal()
        name, current = found
        merged = {**current, **wanted.to_json()}
        # D17: activation answers at once; the Terminal is then created on the CPO side (POST, via the outbox).
        announce = {k: v for k, v in merged.items() if k != "last_updated"}
        message = OutboxMessage(f"terminal:{wanted.terminal_id}:activated:{uuid.uuid4().hex[:8]}",
                                f"terminal:{wanted.terminal_id}", "terminal.post", announce)  # fmt: skip
        self._store(name, {**merged, "active": True}, "terminal.activated", wanted.to_json(), outbox=[message])
        return web.json_response(envelope())

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
        # terminal_id and reference are derived from our name and the terminal's TID: never stored.
        stored = {k: v for k, v in ocpi.items() if k not in ("terminal_id", "reference")}
        data = {**row["data"], "ocpi": stored}
        self.store.apply(
            Step(
                f"ocpi:{name}:{uuid.uuid4().hex}",
                terminals=[TerminalRecord(name, row["device"], row["protocol"], row["state"], data)],
                journal=[JournalEntry("terminal", name, kind, change)],
                outbox=outbox or [],
            )
        )

    # ---- receiver: sessions, CDRs, command results -----------------------------------------------

    def _inbox(self, request: web.Request, kind: str, payload: dict[str, Any]) -> bool:
        """Store what the CPO sent, in one step; False if this request was stored before."""
        message_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        return self.store.apply(
            Step(
                f"inbox:{message_id}",
                inbox=[InboxMessage(message_id, "cpo", kind, payload)],
                inbox_processed=[message_id],
            )
        )

    async def _session_put(self, request: web.Request) -> web.Response:
        try:
            session = OcpiSession.model_validate(await _body(request))
        except ValidationError:
            return web.json_response(envelope(status_code=2001, message="invalid session"), status=400)
        return self._session(request, session)

    async def _session_patch(self, request: web.Request) -> web.Response:
        known = self._sessions.get(request.match_info["id"])
        if known is None:
            return web.json_response(envelope(status_code=2001, message="PATCH of an unknown session"), status=404)
        try:
            patch = OcpiSessionPatch.model_validate(await _body(request))
            session = OcpiSession.model_validate({**known, **patch.to_json()})
        except ValidationError:
            return web.json_response(envelope(status_code=2001, message="invalid session patch"), status=400)
        return self._session(request, session)

    def _session(self, request: web.Request, session: OcpiSession) -> web.Response:
        data = session.to_json()
        self._sessions[session.id] = data
        if self._inbox(request, "session", data) and self.receiver is not None:
            self.receiver.session_pushed(session)
        return web.json_response(envelope())

    async def _cdr(self, request: web.Request) -> web.Response:
        try:
            cdr = Cdr.model_validate(await _body(request))
        except ValidationError:
            return web.json_response(envelope(status_code=2001, message="invalid CDR"), status=400)
        if self._inbox(request, "cdr", cdr.to_json()) and self.receiver is not None:
            self.receiver.cdr_pushed(cdr)
        return web.json_response(envelope(), status=201)

    async def _command_result(self, request: web.Request) -> web.Response:
        try:
            result = CommandResult.model_validate(await _body(request))
        except ValidationError:
            return web.json_response(envelope(status_code=2001, message="invalid command result"), status=400)
        command, uid = request.match_info["command"], request.match_info["uid"]
        stored = self._inbox(request, "command_result", {"command": command, "uid": uid, **result.to_json()})
        if stored and self.receiver is not None:
            self.receiver.command_result(command, uid, result.result)
        return web.json_response(envelope())

    async def _fiscal(self, request: web.Request) -> web.Response:
        """Custom module (OCPI has no fiscal field): the invoicing side's receipt lines and
        signature for a session, by its authorization_reference, to print on the terminal."""
        try:
            data = FiscalData.model_validate(await _body(request))
        except ValidationError:
            return web.json_response(envelope(status_code=2001, message="invalid fiscal data"), status=400)
        reference = request.match_info["reference"]
        session_id = session_id_of(reference)
        if session_id is None or self.store.session(session_id) is None:
            return web.json_response(envelope(status_code=2000, message="unknown authorization_reference"), status=404)
        message_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        if self._inbox(request, "fiscal", {"authorization_reference": reference, **data.to_json()}) and self.fiscal:
            self.fiscal(session_id, tuple(data.lines), message_id)
        return web.json_response(envelope())

    # ---- financial advice confirmations -------------------------------------------------------

    def _fac_objects(self) -> list[dict[str, Any]]:
        out = []
        for row in self.store.sessions(limit=100_000):
            if not row["final"]:
                continue
            fac = fac_from_outcome(outcome_payload(from_json(row["data"])), row["updated_at"])
            if fac is not None:
                out.append(fac.to_json())
        return sorted(out, key=lambda f: (f["last_updated"], f["id"]))

    async def _facs(self, request: web.Request) -> web.Response:
        return _page(request, self._fac_objects())

    async def _fac(self, request: web.Request) -> web.Response:
        found = next((f for f in self._fac_objects() if f["id"] == request.match_info["id"]), None)
        if found is None:
            return web.json_response(envelope(status_code=2000, message="unknown financial advice confirmation"),
                                     status=404)  # fmt: skip
        return web.json_response(envelope(found))


def _unknown_terminal() -> web.Response:
    return web.json_response(envelope(status_code=2000, message="unknown terminal"), status=404)


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


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
        return web.json_response(envelope(status_code=2001, message="bad offset, limit or date"), status=400)
    if offset < 0 or limit < 1:
        return web.json_response(envelope(status_code=2001, message="bad offset or limit"), status=400)
    selected = [
        o for o in objects
        if (start is None or datetime.fromisoformat(o["last_updated"]) >= start)
        and (end is None or datetime.fromisoformat(o["last_updated"]) < end)
    ]  # fmt: skip
    page = selected[offset : offset + limit]
    headers = {"X-Total-Count": str(len(selected)), "X-Limit": str(limit)}
    if offset + limit < len(selected):
        nxt = request.url.update_query({"offset": str(offset + limit), "limit": str(limit)})
        headers["Link"] = f'<{nxt}>; rel="next"'
    return web.json_response(envelope(page), headers=headers)
