"""The journal's audit trail as a self-contained JSON file, and its offline check.

An export holds the selected rows in full (their stored JSON text byte-exact, as hashed), the
rows between them as links only (seq, prev_hash, hash), up to the first signed checkpoint at
or after the last selected row, and that checkpoint. ``verify`` needs nothing else: it checks
every hash, every link and the device key's signature, and that the checkpoint covers every
selected row. Document format: ``evpay-journal-export/1`` (see docs/JOURNAL.md).
"""

from __future__ import annotations

import sqlite3
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gateway.errors import BadInput, GatewayError
from gateway.store.audit import (
    EXPORT_FORMAT,
    AuditReport,
    ChainRow,
    Checkpoint,
    Content,
    Finding,
    audit,
)
from gateway.store.journal import checkpoints as _checkpoints
from gateway.store.journal import rows as _rows

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{2,256}$")]


class ExportError(BadInput):
    """An export that cannot be read as one (not what a verifier can check)."""

    code = "export_unreadable"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ExportRow(_Model):
    seq: Annotated[int, Field(ge=1)]
    prev_hash: Hex64
    hash: Hex64
    step_key: str | None = None
    at: str | None = None
    entity: str | None = None
    entity_id: str | None = None
    kind: str | None = None
    data: str | None = None

    def chain_row(self) -> ChainRow:
        parts = (self.step_key, self.at, self.entity, self.entity_id, self.kind, self.data)
        if all(p is None for p in parts):
            return ChainRow(self.seq, self.prev_hash, self.hash)
        if any(p is None for p in parts):
            raise ExportError(
                f"row {self.seq}: a row is either complete or a link (seq, prev_hash, hash)"
            )
        step_key, at, entity, entity_id, kind, data = (str(p) for p in parts)
        return ChainRow(
            self.seq,
            self.prev_hash,
            self.hash,
            Content(step_key, at, entity, entity_id, kind, data),
        )


class ExportCheckpoint(_Model):
    id: Annotated[int, Field(ge=1)]
    seq: Annotated[int, Field(ge=1)]
    head_hash: Hex64
    at: str
    public_key: Hex64
    signature: Hex


class ExportDoc(_Model):
    format: Literal["evpay-journal-export/1"]
    exported_at: str
    selection: dict[str, str]
    rows: list[ExportRow] = Field(min_length=1)
    checkpoints: list[ExportCheckpoint]


def build(
    conn: sqlite3.Connection,
    *,
    session: str | None,
    start: str | None,
    end: str | None,
    exported_at: str,
) -> dict[str, Any]:
    if session is not None:
        found = conn.execute(
            "SELECT seq FROM journal WHERE entity_id = ? ORDER BY seq", (session,)
        ).fetchall()
        selection = {"session": session}
    else:
        found = conn.execute(
            "SELECT seq FROM journal WHERE at >= ? AND at < ? ORDER BY seq",
            (start or "", end or "~"),
        ).fetchall()
        selection = {k: v for k, v in (("from", start), ("to", end)) if v}
    if not found:
        raise GatewayError(f"the journal has no rows for {selection or 'that range'}")
    chosen = {int(r[0]) for r in found}
    first, last = min(chosen), max(chosen)
    cover = next((cp for cp in _checkpoints(conn) if cp.seq >= last), None)
    rows = _rows(conn, first, cover.seq if cover else None)
    out_rows: list[dict[str, Any]] = []
    for r in rows:
        row: dict[str, Any] = {"seq": r.seq, "prev_hash": r.prev_hash, "hash": r.hash}
        if r.seq in chosen and r.content is not None:
            row.update(_content_json(r.content))
        out_rows.append(row)
    checkpoints = [] if cover is None else [_checkpoint_json(cover)]
    return {
        "format": EXPORT_FORMAT,
        "exported_at": exported_at,
        "selection": selection,
        "rows": out_rows,
        "checkpoints": checkpoints,
    }


def archive(
    conn: sqlite3.Connection, first: int, last: int, cover: Checkpoint, exported_at: str
) -> dict[str, Any]:
    """Rows ``first``..``last`` in full, with the checkpoint that signs row ``last``: what a
    retention cut removes, as an export that ``verify`` checks on its own."""
    out_rows = [
        {"seq": r.seq, "prev_hash": r.prev_hash, "hash": r.hash, **_content_json(r.content)}
        for r in _rows(conn, first, last)
        if r.content is not None
    ]
    return {
        "format": EXPORT_FORMAT,
        "exported_at": exported_at,
        "selection": {"archive": f"{first}..{last}"},
        "rows": out_rows,
        "checkpoints": [_checkpoint_json(cover)],
    }


def _content_json(c: Content) -> dict[str, Any]:
    """A selected row's content as an export carries it (the same fields ``ExportRow`` reads)."""
    return {
        "step_key": c.step_key,
        "at": c.at,
        "entity": c.entity,
        "entity_id": c.entity_id,
        "kind": c.kind,
        "data": c.data,
    }


def _checkpoint_json(cp: Checkpoint) -> dict[str, Any]:
    """The checkpoint that covers an export's rows, as ``ExportCheckpoint`` reads it."""
    return {
        "id": cp.id,
        "seq": cp.seq,
        "head_hash": cp.head_hash,
        "at": cp.at,
        "public_key": cp.public_key,
        "signature": cp.signature,
    }


def verify(text: str | bytes, trusted_key: str | None) -> AuditReport:
    """Check an export on its own. ExportError when it is not an export at all."""
    try:
        doc = ExportDoc.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ExportError(f"not an evpay journal export: {where}: {first['msg']}") from None
    rows = [r.chain_row() for r in doc.rows]
    cps = [
        Checkpoint(c.id, c.seq, c.head_hash, c.at, c.public_key, c.signature)
        for c in doc.checkpoints
    ]
    report = audit(rows, cps, trusted_key, from_genesis=False)
    selected = [r.seq for r in rows if r.content is not None]
    extra: list[Finding] = []
    if not selected:
        extra.append(Finding(None, "empty", "the export holds no complete row"))
    elif report.covered_to is None or report.covered_to < selected[-1]:
        proven = report.covered_to or 0
        open_rows = [s for s in selected if s > proven]
        extra.append(
            Finding(
                open_rows[0],
                "unanchored",
                f"{len(open_rows)} selected row(s) from row {open_rows[0]} "
                "are not covered by a signed checkpoint: run `evpay journal checkpoint` on the "
                "gateway "
                "and export again",
            )
        )
    if extra:
        return AuditReport(
            report.rows,
            report.checkpoints,
            (*report.findings, *extra),
            report.covered_to,
            report.last_seq,
            report.key,
            report.notes,
        )
    return report
