"""Which reservation a recovered Reversal answer names (moved from ``terminal``, whose
``last_result`` asks it after a restart or a lost answer).

Why apart: a Reversal's answer carries the reversal's own POI transaction, not the
reservation it let go; only the request stored under its ServiceID (the service tracker's
snapshot) says which reservation that was. Reading it back is a decision about the driver's
ledger (the hold is marked reversed so the open-hold listing no longer shows it), kept here
beside nothing else.
"""

from __future__ import annotations

from dataclasses import replace

from drivers.base import TerminalResult
from drivers.nexo import messages as nm
from drivers.nexo.asyncio.client import NexoClient
from drivers.nexo.errors import NexoFormatError, NexoSecurityError
from drivers.nexo.results import poi_ref


def reversed_hold(client: NexoClient, result: TerminalResult, service_id: str) -> TerminalResult:
    """A recovered Reversal's answer names no reservation (its POIData is the reversal's
    own transaction): the request stored under ``service_id`` does. Its hold is marked
    reversed when the POI approved, so ``open_preauthorizations`` no longer lists a hold
    the POI let go (a Reversal of it again would be refused NotFound for ever)."""
    stored = next(
        (f for f in client.tracker.snapshot()["in_flight"] if f["service_id"] == service_id),
        None,
    )
    if stored is None:
        return result
    try:
        request = client.wire.decode(str(stored["request"]).encode())
    except (NexoFormatError, NexoSecurityError):
        return result
    body = request.body
    if not isinstance(body, nm.ReversalRequest):
        return result
    tid = body.original_poi_transaction.poi_transaction_id
    ref = poi_ref(tid.transaction_id, tid.time_stamp) if tid is not None else None
    if ref is None or ref not in client.handles:
        return result
    if result.approved:
        client.note_hold(ref, "reversed")  # saved with the result's finish()
    return replace(result, ref=ref)
