"""The payments module's Terminals as the CPO manages them on our server: list and read, assign
locations and EVSEs (PUT, PATCH), activate and deactivate; every change a store step."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.ocpi.models import Terminal, TerminalActivation, TerminalPatch, envelope
from gateway.ocpi.server_bodies import _error, _page, parse
from gateway.store import JournalEntry, OutboxMessage, Step, Store, TerminalRecord


class TerminalsSender:
    """The Terminals part of ``PtpServer`` (which sets these)."""

    store: Store
    site: str
    clock: Callable[[], datetime]

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


def _unknown_terminal() -> web.Response:
    return web.json_response(envelope(status_code=2000, message="unknown terminal"), status=404)
