"""The file and its journal looked after: SQLite's own integrity check, the hash chain verified,
its head signed by the device key, an audit export, the WAL folded into the file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.store import export as _export
from gateway.store import journal as _journal
from gateway.store.audit import AuditReport, Checkpoint
from gateway.store.db import sqlite_errors, to_text, transaction
from gateway.store.store_registration import StoreRegistration


class StoreJournal(StoreRegistration):
    def integrity(self) -> str | None:
        """SQLite's own full check of the file: None when it is sound, else its first complaint."""
        rows = self._query("PRAGMA integrity_check(5)", ())
        found = [str(r[0]) for r in rows]
        return None if found == ["ok"] else "; ".join(found)

    def verify_journal(self, trusted_key: str | None = None) -> AuditReport:
        with sqlite_errors(str(self.path)):
            return _journal.verify(self._conn, trusted_key)

    def sign_journal(self, key: Ed25519PrivateKey) -> Checkpoint | None:
        """Sign the journal's head with the device key (at intervals and at shutdown)."""
        with transaction(self._conn, str(self.path)):
            return _journal.sign_checkpoint(self._conn, key, to_text(self._clock()))

    def journal_export(
        self,
        *,
        session: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """The audit trail of one session or a time range: see ``gateway.store.export``."""
        with sqlite_errors(str(self.path)):
            return _export.build(
                self._conn,
                session=session,
                start=to_text(start) if start else None,
                end=to_text(end) if end else None,
                exported_at=to_text(self._clock()),
            )

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (at shutdown, so a copied file is complete)."""
        with sqlite_errors(str(self.path)):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
