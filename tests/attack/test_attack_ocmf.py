"""Adversarial review of issue 30: OCMF verification with the new curves and key forms, the
plain-arithmetic ECDSA verifier (gateway/fiscal/ecdsa_pure.py) and ``evpay meter verify``."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gateway.fiscal import ecdsa_pure
from gateway.fiscal.ocmf import OcmfError, PureKey, check_key, load_key, parse, verify
from tests.helpers import EVPAY, subprocess_env

DATA = Path(__file__).parent.parent / "data" / "ocmf"
RECORDS: dict[str, dict[str, Any]] = {
    r["id"]: r for r in json.loads((DATA / "field_records.json").read_text(encoding="utf-8"))
}
K1 = RECORDS["safe-htb-secp192k1-1"]  # secp192k1, DER SPKI key, DER signature
R1 = RECORDS["safe-ebz-ld3-secp192r1-1"]  # secp192r1 (OpenSSL), eBZ
CURVE = ecdsa_pure.CURVES["secp192k1"]


def with_signature(text: str, **changes: str) -> str:
    record = parse(text)
    signature = {**record.signature, **changes}
    return text[: text.rindex("|") + 1] + json.dumps(signature)


def rs(text: str) -> tuple[int, int]:
    return decode_dss_signature(bytes.fromhex(str(parse(text).signature["SD"])))


def der_hex(r: int, s: int) -> str:
    return encode_dss_signature(r, s).hex().upper()


def k1_parts() -> tuple[ecdsa_pure.Point, bytes, int, int]:
    record = parse(K1["record"])
    key = load_key(K1["key"], record.algorithm)
    assert isinstance(key, PureKey)
    digest = hashlib.sha256(record.payload_text.encode("utf-8")).digest()
    r, s = rs(K1["record"])
    assert ecdsa_pure.verify(CURVE, key.point, digest, r, s)
    return key.point, digest, r, s


def meter_verify(tmp_path: Path, record: str, key: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "record.txt").write_text(record, encoding="utf-8")
    return subprocess.run(
        [*EVPAY, "meter", "verify", "@" + str(tmp_path / "record.txt"), "--key", key, "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
        timeout=60,
    )


# ---- the pure verifier --------------------------------------------------------------------


def test_pure_verifier_refuses_r_or_s_zero_or_not_below_n() -> None:
    point, digest, r, s = k1_parts()
    n = CURVE.n
    for bad_r, bad_s in [(0, s), (r, 0), (n, s), (r, n), (r + n, s), (r, s + n), (0, 0)]:
        assert not ecdsa_pure.verify(CURVE, point, digest, bad_r, bad_s), (bad_r, bad_s)


def test_pure_verifier_refuses_the_point_at_infinity_and_points_off_the_curve() -> None:
    _, digest, r, s = k1_parts()
    assert not ecdsa_pure.verify(CURVE, None, digest, r, s)
    for raw in (bytes(48), b"\x04" + bytes(48), b"\x04" + (1).to_bytes(24, "big") * 2):
        with pytest.raises(ValueError):
            ecdsa_pure.point_from_bytes(CURVE, raw)
    # x = p (out of the field) with a y that would satisfy the equation for x = 0
    with pytest.raises(ValueError):
        ecdsa_pure.point_from_bytes(CURVE, CURVE.p.to_bytes(24, "big") + bytes(24))


@pytest.mark.parametrize(
    "raw",
    [
        "04" + "11" * 47,  # 04 prefix, one byte short
        "04" + "11" * 49,  # 04 prefix, one byte long
        "11" * 47,  # bare, one byte short
        "11" * 50,  # bare, two bytes long
        "05" + "11" * 48,  # wrong prefix
        "",
    ],
)
def test_wrong_length_keys_are_refused_with_a_typed_error(raw: str) -> None:
    for algorithm in ("ECDSA-secp192k1-SHA256", "ECDSA-secp192r1-SHA256"):
        with pytest.raises(OcmfError):
            load_key(raw or "00", algorithm)


def test_a_secp192k1_key_under_the_secp192r1_label_never_verifies() -> None:
    record = parse(with_signature(K1["record"], SA="ECDSA-secp192r1-SHA256"))
    der_key = load_key(K1["key"], record.algorithm)  # the SPKI names secp192k1
    assert not verify(record, der_key).valid
    point = load_key(K1["key"], "ECDSA-secp192k1-SHA256").point  # type: ignore[union-attr]
    bare = point[0].to_bytes(24, "big") + point[1].to_bytes(24, "big")  # type: ignore[index]
    for raw in (bare, b"\x04" + bare):  # a bare k1 point read on r1: not on that curve
        with pytest.raises(OcmfError):
            load_key(raw.hex(), record.algorithm)


# ---- signature encodings --------------------------------------------------------------------


@pytest.mark.parametrize("entry", [K1, R1], ids=["secp192k1-pure", "secp192r1-openssl"])
def test_high_s_verifies_but_is_the_same_record(entry: dict[str, Any]) -> None:
    """(r, n-s) is a second valid signature (ECDSA malleability): SAFE's transparency software
    (BouncyCastle) accepts it and so does this verifier. It is not a billing problem because a
    record's identity is the SHA-256 of its payload, not its signature: the malleated record is
    the same record, never a second session to bill."""
    record = parse(entry["record"])
    key = load_key(entry["key"], record.algorithm)
    n = key.curve.n if isinstance(key, PureKey) else ecdsa_pure_n(record.algorithm)
    try:
        r, s = rs(entry["record"])
    except ValueError:  # eBZ: sloppy DER, read unsigned
        from gateway.fiscal.ocmf import _unsigned_der

        r, s = _unsigned_der(bytes.fromhex(str(record.signature["SD"])))  # type: ignore[misc]
    malleated = parse(with_signature(entry["record"], SD=der_hex(r, n - s)))
    assert verify(record, key).valid and verify(malleated, key).valid
    assert malleated.digest == record.digest


def ecdsa_pure_n(algorithm: str) -> int:
    assert "secp192r1" in algorithm
    return 0xFFFFFFFFFFFFFFFFFFFFFFFF99DEF836146BC9B1B4D22831


def test_sloppy_der_reading_does_not_accept_a_different_value() -> None:
    """The eBZ reading takes DER integers unsigned. An r written with an extra FF byte (a
    strictly negative integer in DER) is a different, too-large number: refused. An r with
    leading zero bytes (non-minimal) is the same number: accepted (encoding malleability only)."""
    _, _, r, s = k1_parts()
    key = load_key(K1["key"], "ECDSA-secp192k1-SHA256")

    def der(r_bytes: bytes, s_bytes: bytes) -> str:
        body = b"\x02" + bytes([len(r_bytes)]) + r_bytes + b"\x02" + bytes([len(s_bytes)]) + s_bytes
        return (b"\x30" + bytes([len(body)]) + body).hex()

    rb, sb = r.to_bytes(24, "big"), s.to_bytes(24, "big")
    bad = parse(with_signature(K1["record"], SD=der(b"\xff" + rb, sb)))
    assert not verify(bad, key).valid
    negated = (-r) % (1 << 192)  # two's complement -r in 24 bytes, read unsigned: another number
    bad2 = parse(with_signature(K1["record"], SD=der(negated.to_bytes(24, "big"), sb)))
    assert not verify(bad2, key).valid
    padded = parse(with_signature(K1["record"], SD=der(b"\x00\x00" + rb, b"\x00" + sb)))
    assert verify(padded, key).valid and padded.digest == parse(K1["record"]).digest


# ---- evpay meter verify: exit 1 or 2, never a traceback -------------------------------------

MALFORMED_SPKI = "30 0A 30 04 06 00 06 00 03 02 00 04"  # SEQUENCE{SEQUENCE{OID "", OID ""}, BIT}


def test_cli_malformed_spki_with_an_empty_oid_is_unreadable_not_a_traceback(
    tmp_path: Path,
) -> None:
    done = meter_verify(tmp_path, K1["record"], MALFORMED_SPKI)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-400:]


def test_check_key_on_a_malformed_spki_is_a_typed_error() -> None:
    with pytest.raises(OcmfError):
        check_key(MALFORMED_SPKI)


@pytest.mark.parametrize(
    ("name", "sd", "expected"),
    [
        ("r-zero", der_hex(0, 1), 1),
        ("s-zero", der_hex(1, 0), 1),
        ("r-is-n", der_hex(CURVE.n, 1), 1),
        ("s-above-n", der_hex(1, CURVE.n + 5), 1),
        ("negative-r", "3006020180020101", 1),
        ("empty", "", 1),
        ("garbage", "zz", 2),
    ],
)
def test_cli_bad_signatures_exit_1_or_2_without_a_traceback(
    tmp_path: Path, name: str, sd: str, expected: int
) -> None:
    done = meter_verify(tmp_path, with_signature(K1["record"], SD=sd), K1["key"])
    assert "Traceback" not in done.stderr, done.stderr[-400:]
    assert done.returncode in (1, 2), (name, done.returncode, done.stdout)


@pytest.mark.parametrize(
    "key",
    [
        "04" + "11" * 48,  # off-curve 04 point
        "11" * 48,  # off-curve bare point
        "04" + "11" * 10,  # wrong length
    ],
)
def test_cli_bad_keys_exit_2_without_a_traceback(tmp_path: Path, key: str) -> None:
    done = meter_verify(tmp_path, K1["record"], key)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-400:]


def test_cli_k1_key_under_the_r1_label_is_invalid_or_unreadable(tmp_path: Path) -> None:
    record = with_signature(K1["record"], SA="ECDSA-secp192r1-SHA256")
    done = meter_verify(tmp_path, record, K1["key"])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout


def test_a_config_with_a_malformed_meter_key_is_a_validation_error() -> None:
    from pydantic import ValidationError

    from gateway.settings import EvseSettings

    with pytest.raises(ValidationError):
        EvseSettings.model_validate({"meter_public_key": MALFORMED_SPKI.replace(" ", "")})
