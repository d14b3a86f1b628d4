"""ECDSA verification in plain integer arithmetic, for the meter curves OpenSSL does not offer.

SAFE's transparency software verifies OCMF records on every SEC 2 curve its library knows, and
real test records use secp192k1 (the SAFE test file test_ocmf_transaction_two_values.xml),
which ``cryptography`` (OpenSSL) has no implementation of. Verification needs only public
values, so it is done here: affine point arithmetic over the curve's prime field with the
standard domain parameters (SEC 2 v2, sections 2.2.1 and 2.3.1). Verifying only: no secret
is handled, so timing does not matter, and there is no signing code to get wrong.

Each curve checks itself on import (G on the curve, n*G the point at infinity), so a mistyped
parameter cannot pass silently.
"""

from __future__ import annotations

from dataclasses import dataclass

Point = tuple[int, int] | None  # None: the point at infinity


@dataclass(frozen=True, slots=True)
class Curve:
    name: str
    oid: str
    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int

    @property
    def size(self) -> int:
        """Bytes of one coordinate."""
        return (self.p.bit_length() + 7) // 8

    def contains(self, point: Point) -> bool:
        if point is None:
            return True
        x, y = point
        return (
            0 <= x < self.p
            and 0 <= y < self.p
            and (y * y - x * x * x - self.a * x - self.b) % self.p == 0
        )


def _add(curve: Curve, one: Point, two: Point) -> Point:
    if one is None:
        return two
    if two is None:
        return one
    p = curve.p
    (x1, y1), (x2, y2) = one, two
    if x1 == x2:
        if (y1 + y2) % p == 0:
            return None
        slope = (3 * x1 * x1 + curve.a) * pow(2 * y1, -1, p) % p
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, p) % p
    x3 = (slope * slope - x1 - x2) % p
    return x3, (slope * (x1 - x3) - y1) % p


def _multiply(curve: Curve, k: int, point: Point) -> Point:
    result: Point = None
    addend = point
    while k:
        if k & 1:
            result = _add(curve, result, addend)
        addend = _add(curve, addend, addend)
        k >>= 1
    return result


def point_from_bytes(curve: Curve, raw: bytes) -> Point:
    """An uncompressed point (04||X||Y) or the bare X||Y; ValueError if it is not on the curve.
    (Compressed points of these curves are not met in meter data.)"""
    size = curve.size
    if len(raw) == 2 * size + 1 and raw[0] == 0x04:
        raw = raw[1:]
    if len(raw) != 2 * size:
        raise ValueError(f"not a {curve.name} point: {len(raw)} bytes")
    point = (int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))
    if not curve.contains(point):
        raise ValueError(f"the point is not on {curve.name}")
    return point


def verify(curve: Curve, point: Point, digest: bytes, r: int, s: int) -> bool:
    """ECDSA verification (SEC 1 v2, 4.1.4) of ``digest`` (the message's hash)."""
    n = curve.n
    if point is None or not (0 < r < n and 0 < s < n):
        return False
    e = int.from_bytes(digest, "big") >> max(0, 8 * len(digest) - n.bit_length())
    w = pow(s, -1, n)
    g = (curve.gx, curve.gy)
    total = _add(curve, _multiply(curve, e * w % n, g), _multiply(curve, r * w % n, point))
    return total is not None and total[0] % n == r


CURVES: dict[str, Curve] = {
    c.name: c
    for c in (
        Curve(
            "secp192k1",
            "1.3.132.0.31",
            p=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFEE37,
            a=0,
            b=3,
            gx=0xDB4FF10EC057E9AE26B07D0280B7F4341DA5D1B1EAE06C7D,
            gy=0x9B2F2F6D9C5628A7844163D015BE86344082AA88D95E2F9D,
            n=0xFFFFFFFFFFFFFFFFFFFFFFFE26F2FC170F69466A74DEFD8D,
        ),
        Curve(
            "secp224k1",
            "1.3.132.0.32",
            p=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFE56D,
            a=0,
            b=5,
            gx=0xA1455B334DF099DF30FC28A169A467E9E47075A90F7E650EB6B7A45C,
            gy=0x7E089FED7FBA344282CAFBD6F7E319F7C0B0BD59E2CA4BDB556D61A5,
            n=0x010000000000000000000000000001DCE8D2EC6184CAF0A971769FB1F7,
        ),
    )
}
BY_OID = {c.oid: c for c in CURVES.values()}


def _self_check(curve: Curve) -> None:
    g = (curve.gx, curve.gy)
    if not curve.contains(g) or _multiply(curve, curve.n, g) is not None:
        raise AssertionError(f"{curve.name}: domain parameters are inconsistent")


for _curve in CURVES.values():
    _self_check(_curve)


# ---- the DER the keys come in ---------------------------------------------------------------


def _der_item(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, offset after) of the DER item at ``pos``; ValueError if malformed."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length, pos = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count not in (1, 2) or pos + count > len(data):
            raise ValueError("bad DER length")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos : pos + length], pos + length


def _oid(content: bytes) -> str:
    if not content:
        raise ValueError("an empty OID names no curve")
    parts = [content[0] // 40, content[0] % 40]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def spki_key(der: bytes) -> tuple[Curve, Point]:
    """A SubjectPublicKeyInfo naming one of ``CURVES``; ValueError for anything else."""
    tag, body, end = _der_item(der, 0)
    if tag != 0x30 or end != len(der):
        raise ValueError("not a DER SubjectPublicKeyInfo")
    tag, algorithm, pos = _der_item(body, 0)
    tag_bits, bits, _ = _der_item(body, pos)
    if tag != 0x30 or tag_bits != 0x03 or not bits or bits[0] != 0:
        raise ValueError("not an EC SubjectPublicKeyInfo")
    _, key_type, after = _der_item(algorithm, 0)
    _, named, _ = _der_item(algorithm, after)
    curve = BY_OID.get(_oid(named)) if _oid(key_type) == "1.2.840.10045.2.1" else None
    if curve is None:
        raise ValueError("not a key on a curve verified here")
    return curve, point_from_bytes(curve, bits[1:])
