"""A charger's signed meter record (OCMF) checked and reduced to what the engine bills with.

Pure: the record's text and the meter's public key (configured per EVSE: keys travel out of
band) in, a ``SignedMeter`` out — never an exception, since a bad record is a fact to record,
not a reason to drop a session. The engine de-duplicates records by payload hash, binds them to
the session (and to its card transaction through the authorization reference, when the meter
wrote one in ``ID``), and bills the verified begin/end readings.

The fallback rule (docs/FISCAL.md): without a verified begin and end reading of one meter
bound to the session, the engine bills the charger's calibrated meter reading as before, notes
why, and a German receipt says the signature is not verified (it is then not complete).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from gateway.fiscal.ocmf import OcmfError, load_key, parse, verify
from gateway.fiscal.receipt import MeterProof


@dataclass(frozen=True, slots=True)
class SignedMeter:
    payload_sha256: str  # of the byte-exact payload: the de-duplication key
    record: str  # the record as received, byte-exact (for the auditor and the driver)
    meter: str  # the meter's serial (MS)
    identification: str  # ID: what the meter bound the transaction to (our authorization reference)
    begin_wh: int | None
    end_wh: int | None
    verified: bool  # signature valid against the configured key, readings in good status
    reason: str
    public_key: str  # the key it was checked against, as configured (compact hex or base64)

    def proof(self) -> MeterProof:
        return MeterProof(
            self.meter,
            self.payload_sha256,
            self.begin_wh,
            self.end_wh,
            self.verified,
            self.reason,
            self.public_key,
        )


def check(text: str, key_text: str | None) -> SignedMeter:
    """Parse ``text`` and verify it with ``key_text``; every failure is in the verdict."""
    compact = "".join((key_text or "").split()).replace(":", "")
    try:
        record = parse(text)
    except OcmfError as exc:
        digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
        return SignedMeter(digest, text, "", "", None, None, False, f"unreadable: {exc}", compact)
    payload = record.payload
    begin = next((r for r in record.readings if r.kind == "B"), None)
    end = next((r for r in reversed(record.readings) if r.kind == "E"), None)
    base = SignedMeter(
        hashlib.sha256(record.payload_text.encode("utf-8")).hexdigest(),
        text,
        str(payload.get("MS", "")),
        str(payload.get("ID", "") or ""),
        int(begin.energy_wh) if begin else None,
        int(end.energy_wh) if end else None,
        False,
        "",
        compact,
    )
    if not compact:
        return replace(
            base, verified=False, reason="no public key configured for this meter's EVSE"
        )
    try:
        verdict = verify(record, load_key(compact, record.algorithm))
    except OcmfError as exc:
        return replace(base, verified=False, reason=str(exc))
    if not verdict.valid:
        return replace(base, verified=False, reason=verdict.reason)
    bad = [r.status for r in (begin, end) if r is not None and r.status not in ("", "G")]
    if bad:
        return replace(
            base, verified=False, reason=f"signed, but a reading's status is {bad[0]!r} (not good)"
        )
    return replace(base, verified=True, reason=verdict.reason)
