"""The CPO registration row (versions URL, our tokens sealed, the CPO's endpoints) and the
upstream status: kept by the upstream worker, read by ``evpay status`` and the daemon's health."""

from __future__ import annotations

import json
from typing import Any

from gateway.store import journal as _journal
from gateway.store.db import from_text, sqlite_errors, to_text
from gateway.store.store_reads import StoreReads


class StoreRegistration(StoreReads):
    def save_registration(
        self, versions_url: str, token_b: str, token_c: str, endpoints: dict[str, Any]
    ) -> None:
        """Replace the CPO registration (tokens arrive here already encrypted)."""
        with sqlite_errors(str(self.path)):
            self._conn.execute(
                "INSERT INTO upstream_registration (id, versions_url, token_b, token_c, "
                "endpoints, registered_at)"
                " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET versions_url = "
                "excluded.versions_url,"
                " token_b = excluded.token_b, token_c = excluded.token_c, endpoints = "
                "excluded.endpoints,"
                " registered_at = excluded.registered_at",
                (versions_url, token_b, token_c, _journal.dumps(endpoints), to_text(self._clock())),
            )

    def set_upstream_status(self, registered: bool, reason: str) -> None:
        with sqlite_errors(str(self.path)):
            self._conn.execute(
                "INSERT INTO upstream_status (id, state, reason, at) VALUES (1, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET state = excluded.state, reason = excluded.reason, "
                "at = excluded.at",
                ("registered" if registered else "not_registered", reason, to_text(self._clock())),
            )

    def upstream_status(self) -> dict[str, Any] | None:
        """{"registered": bool, "reason": str, "at": datetime} or None if the upstream never ran."""
        rows = self._query("SELECT state, reason, at FROM upstream_status", ())
        if not rows:
            return None
        state, reason, at = rows[0]
        return {"registered": state == "registered", "reason": reason, "at": from_text(at)}

    def forget_registration(self) -> None:
        with sqlite_errors(str(self.path)):
            self._conn.execute("DELETE FROM upstream_registration")

    def registration(self) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT versions_url, token_b, token_c, endpoints, registered_at FROM "
            "upstream_registration",
            (),
        )
        if not rows:
            return None
        url, token_b, token_c, endpoints, at = rows[0]
        return {
            "versions_url": url,
            "token_b": token_b,
            "token_c": token_c,
            "endpoints": json.loads(endpoints),
            "registered_at": at,
        }
