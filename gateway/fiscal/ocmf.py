"""Signed meter values in the Open Charge Metering Format: ``OCMF|{payload}|{signature}``.

Sans-I/O: text in, a verdict out. The payload is kept byte-exact (the signature covers its
bytes as the meter wrote them; it is never re-serialised) and the record is split by JSON
structure, not by ``|``, so a text field that holds ``|`` cannot cut it in the wrong place.

Why not ``pyocmf``: it splits the record at ``|`` (a ``|`` inside a field breaks it), and it
accepts only DER public keys and DER signatures. Real meters also give keys as a bare curve
point and signatures as raw ``r||s``. This module uses ``cryptography`` directly.

Accepted (docs/FISCAL.md says where the list comes from): ECDSA on the prime curves SAFE's
transparency software verifies for real meters -- secp192r1 (eBZ), secp224r1, secp256r1,
secp256k1, secp384r1, secp521r1, brainpoolP256r1, brainpoolP384r1, brainpoolP512r1 -- named in
``SA`` in any letter case and with its "brainpool256r1" spelling, with SHA-256/384/512; keys as
DER SubjectPublicKeyInfo, a point (uncompressed 04||X||Y or compressed) or the bare X||Y without
the 04 prefix (Isabellenhütte), in hex (spaces, colons allowed) or base64; signatures (``SD``) as
DER or raw r||s, hex or base64 (``SE``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gateway.errors import GatewayError
from gateway.fiscal import ecdsa_pure
from gateway.jsonscan import brackets

CURVES: dict[str, ec.EllipticCurve] = {
    "secp192r1": ec.SECP192R1(),
    "secp224r1": ec.SECP224R1(),
    "secp256r1": ec.SECP256R1(),
    "secp256k1": ec.SECP256K1(),
    "secp384r1": ec.SECP384R1(),
    "secp521r1": ec.SECP521R1(),
    "brainpoolP256r1": ec.BrainpoolP256R1(),
    "brainpoolP384r1": ec.BrainpoolP384R1(),
    "brainpoolP512r1": ec.BrainpoolP512R1(),
}
# Every curve accepted: OpenSSL's, then the ones verified in plain arithmetic (ecdsa_pure.py).
ALL: tuple[str, ...] = (*CURVES, *ecdsa_pure.CURVES)
# SA spells the curve as the meter does: any case, and "brainpool256r1" for brainpoolP256r1
# (the transparency software reads it so).
_CURVE_NAMES = {name.lower(): name for name in ALL} | {
    name.lower().replace("brainpoolp", "brainpool"): name for name in ALL if "brainpool" in name
}
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
DEFAULT_SA = "ECDSA-secp256r1-SHA256"
MAX_RECORD = 64 * 1024


class OcmfError(GatewayError):
    """The record cannot be read (not a verdict on its signature)."""

    code = "ocmf_unreadable"
    exit_code = 2


@dataclass(frozen=True, slots=True)
class MeterReading:
    at: str  # TM as the meter wrote it
    energy_wh: Decimal
    status: str  # ST: "G" good
    kind: str  # TX: B begin, E end, … (empty when absent)


@dataclass(frozen=True, slots=True)
class OcmfRecord:
    payload_text: str  # byte-exact, as signed
    signature_text: str
    payload: dict[str, Any]
    signature: dict[str, Any]
    readings: tuple[MeterReading, ...] = field(default=())

    @property
    def digest(self) -> str:
        """SHA-256 of the signed payload: the record's identity (duplicates are the same record)."""
        return hashlib.sha256(self.payload_text.encode("utf-8")).hexdigest()

    @property
    def algorithm(self) -> str:
        return str(self.signature.get("SA") or DEFAULT_SA)


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    reason: str


def parse(text: str) -> OcmfRecord:
    """Split and read a record; OcmfError says what is wrong with it."""
    if len(text) > MAX_RECORD:
        raise OcmfError(f"record longer than {MAX_RECORD} characters")
    text = text.strip()
    if not text.startswith("OCMF|"):
        try:
            text = bytes.fromhex(text).decode("utf-8")  # the hex form of QR codes and XML files
        except (ValueError, UnicodeDecodeError):
            raise OcmfError("not an OCMF record: it must start with 'OCMF|'") from None
        if not text.startswith("OCMF|"):
            raise OcmfError("not an OCMF record: it must start with 'OCMF|'")
    start = len("OCMF|")
    end = _object_end(text, start)
    if end >= len(text) or text[end] != "|":
        raise OcmfError("the payload must be followed by '|' and the signature")
    signature_end = _object_end(text, end + 1)
    payload_text, signature_text = text[start:end], text[end + 1 : signature_end]
    try:
        payload = json.loads(payload_text, parse_float=Decimal)
        signature = json.loads(signature_text)
    except ValueError as exc:
        raise OcmfError(f"invalid JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(signature, dict) or "SD" not in signature:
        raise OcmfError("the payload and the signature are JSON objects, and the signature has SD")
    return OcmfRecord(payload_text, signature_text, payload, signature, _readings(payload))


def _number(raw: object) -> Decimal:
    """A reading value (RV): a record that is not a finite number there is unreadable, not a
    crash."""
    try:
        value = (
            None
            if isinstance(raw, bool)
            else raw
            if isinstance(raw, Decimal)
            else Decimal(str(raw))
        )
    except ArithmeticError:
        value = None
    if value is None or not value.is_finite():
        raise OcmfError(f"a reading value (RV) is not a number: {raw!r}")
    return value


def _object_end(text: str, start: int) -> int:
    """The index just past the JSON object starting at ``start`` (strings and escapes respected)."""
    if start >= len(text) or text[start] != "{":
        raise OcmfError("truncated: a JSON object was expected")
    end = next((i for i, depth in brackets(text, start) if depth == 0), None)
    if end is None:
        raise OcmfError("truncated: a JSON object is not closed")
    return end + 1


def _readings(payload: dict[str, Any]) -> tuple[MeterReading, ...]:
    out = []
    for raw in payload.get("RD") or []:
        if not isinstance(raw, dict) or "RV" not in raw:
            continue
        value = _number(raw["RV"])
        unit = str(raw.get("RU", "kWh"))
        wh = value * 1000 if unit == "kWh" else value
        out.append(
            MeterReading(str(raw.get("TM", "")), wh, str(raw.get("ST", "")), str(raw.get("TX", "")))
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PureKey:
    """A public key on a curve OpenSSL lacks (ecdsa_pure.py verifies it)."""

    curve: ecdsa_pure.Curve
    point: ecdsa_pure.Point


PublicKey = ec.EllipticCurvePublicKey | PureKey


def load_key(text: str, algorithm: str = DEFAULT_SA) -> PublicKey:
    """A public key as DER SubjectPublicKeyInfo or a point (04||X||Y, compressed, or the bare
    X||Y), hex (spaces, colons allowed) or base64."""
    raw = _bytes("".join(text.split()).replace(":", ""), "public key")
    try:
        key = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        return _point_or_pure_key(raw, algorithm)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise OcmfError("the public key is not an elliptic-curve key")
    return key


def _point_or_pure_key(raw: bytes, algorithm: str) -> PublicKey:
    try:
        return PureKey(*ecdsa_pure.spki_key(raw))
    except ValueError:
        pass
    curve_name = _curve_name(algorithm)
    try:
        if curve_name in ecdsa_pure.CURVES:
            pure = ecdsa_pure.CURVES[curve_name]
            return PureKey(pure, ecdsa_pure.point_from_bytes(pure, raw))
        named = CURVES[curve_name]
        if len(raw) == 2 * _size(named):  # the bare X||Y, without the 04 of an uncompressed point
            raw = b"\x04" + raw
        return ec.EllipticCurvePublicKey.from_encoded_point(named, raw)
    except ValueError:
        raise OcmfError(
            "the public key is neither DER SubjectPublicKeyInfo nor a point on the curve"
        ) from None


def check_key(text: str) -> None:
    """OcmfError unless ``text`` is a DER key or a point on one of the supported curves (a bare
    point's curve is the record's to name, so any of them will do here)."""
    problem = ""
    for algorithm in (f"ECDSA-{name}-SHA256" for name in ALL):
        try:
            load_key(text, algorithm)
        except OcmfError as exc:
            problem = str(exc)
        else:
            return
    raise OcmfError(problem.replace("the curve", f"any supported curve ({', '.join(ALL)})"))


def verify(record: OcmfRecord, key: PublicKey) -> Verdict:
    """Check the signature over the byte-exact payload with the meter's public key."""
    algorithm = record.algorithm
    curve_name, digest = _curve_name(algorithm), _hash(algorithm)
    key_curve = key.curve.name
    if key_curve != curve_name:
        return Verdict(False, f"the key is on {key_curve}, the record says {algorithm}")
    encoding = str(record.signature.get("SE") or "hex").lower()
    signature = _bytes(str(record.signature["SD"]), "signature", encoding)
    size = key.curve.size if isinstance(key, PureKey) else _size(key.curve)
    readings = [signature]  # DER, as the OCMF specification says
    unsigned = _unsigned_der(signature)
    if unsigned is not None:  # DER whose integers are fixed-width and unsigned (eBZ)
        readings.append(encode_dss_signature(*unsigned))
    if len(signature) == 2 * size:  # or raw r||s, as some meters send: it may begin with 0x30
        readings.append(
            encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
        )
    payload = record.payload_text.encode("utf-8")
    problem = ""
    for reading in readings:
        try:
            if isinstance(key, PureKey):
                r, s = decode_dss_signature(reading)
                hashed = hashes.Hash(digest())
                hashed.update(payload)
                if not ecdsa_pure.verify(key.curve, key.point, hashed.finalize(), r, s):
                    raise InvalidSignature
            else:
                key.verify(reading, payload, ec.ECDSA(digest()))
        except InvalidSignature:
            problem = "the signature does not match the payload and key"
        except ValueError as exc:
            problem = problem or f"the signature cannot be read: {exc}"
        else:
            return Verdict(True, f"valid {algorithm} signature")
    return Verdict(False, problem)


def _unsigned_der(signature: bytes) -> tuple[int, int] | None:
    """r and s of a SEQUENCE of two INTEGERs read as unsigned numbers, or None if it is not one.

    An eBZ LD3 writes r and s as 24 bytes each whatever their value: an r whose first bit is
    set reads as negative in strict DER, an s with a leading zero byte is not minimal, and
    OpenSSL refuses both. The transparency software reads the integers as positive values
    (``getPositiveValue``), so a record it verifies is read that way here too."""
    if len(signature) < 8 or signature[0] != 0x30 or signature[1] != len(signature) - 2:
        return None
    values: list[int] = []
    pos = 2
    while pos < len(signature) and len(values) < 2:
        if signature[pos] != 0x02 or pos + 2 > len(signature):
            return None
        end = pos + 2 + signature[pos + 1]
        if signature[pos + 1] == 0 or signature[pos + 1] >= 0x80 or end > len(signature):
            return None
        values.append(int.from_bytes(signature[pos + 2 : end], "big"))
        pos = end
    if len(values) != 2 or pos != len(signature) or 0 in values:
        return None
    return values[0], values[1]


def _curve_name(algorithm: str) -> str:
    """The curve ``SA`` names, spelled as ``CURVES`` or ``ecdsa_pure.CURVES`` spell it."""
    parts = algorithm.split("-")
    name = _CURVE_NAMES.get(parts[1].lower()) if len(parts) == 3 else None
    if parts[0] != "ECDSA" or name is None:
        raise OcmfError(
            f"unsupported signature algorithm {algorithm!r}; supported curves: {', '.join(ALL)}"
        )
    return name


def _size(curve: ec.EllipticCurve) -> int:
    """Bytes of one coordinate (and of r or s) on ``curve``."""
    return (curve.key_size + 7) // 8


def _hash(algorithm: str) -> type[hashes.HashAlgorithm]:
    name = algorithm.rsplit("-", 1)[-1]
    if name not in HASHES:
        raise OcmfError(f"unsupported hash in {algorithm!r}")
    return HASHES[name]


def _bytes(text: str, what: str, encoding: str = "auto") -> bytes:
    if encoding in ("hex", "auto"):
        try:
            return bytes.fromhex(text)
        except ValueError:
            if encoding == "hex":
                raise OcmfError(f"the {what} is not hex") from None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise OcmfError(f"the {what} is neither hex nor base64") from None


def signed_record(payload: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """An OCMF record signed with ``key`` (secp256r1, SHA-256, DER in hex): what a simulated
    meter sends, so the demo and the tests bill from signed data the way a real site does."""
    text = json.dumps(payload, separators=(",", ":"))
    signature = key.sign(text.encode("utf-8"), ec.ECDSA(hashes.SHA256())).hex().upper()
    return f"OCMF|{text}|" + json.dumps({"SA": DEFAULT_SA, "SD": signature}, separators=(",", ":"))


def ocmf_time(moment: datetime) -> str:
    """OCMF's time format: ``2026-01-05T08:00:00,000+0000 S`` (S: synchronised clock)."""
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S,")
        + f"{moment.microsecond // 1000:03d}"
        + moment.strftime("%z")
        + " S"
    )
