"""What the CPO pushes to us when it runs the charger or signs receipts: Sessions, CDRs, command
results and fiscal data, each kept in the inbox before it is acknowledged."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gateway.ocpi.charger import OcpiChargerLink, session_id_of
from gateway.ocpi.models import (
    Cdr,
    CommandResult,
    FiscalData,
    OcpiSession,
    OcpiSessionPatch,
    envelope,
)
from gateway.ocpi.server_bodies import _error, parse
from gateway.payments.events import FiscalDataArrived
from gateway.store import InboxMessage, Step, Store


class PushReceiver:
    """The receiving part of ``PtpServer`` (which sets these)."""

    store: Store
    clock: Callable[[], datetime]
    receiver: OcpiChargerLink | None
    fiscal: Callable[[FiscalDataArrived], None] | None
    _sessions: dict[str, dict[str, Any]]

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
