"""Real meter records from SAFE's transparency software test files (tests/data/ocmf), through
the verifier and through ``evpay meter verify``: each gets the verdict SAFE's software gives, and
every mutation of a valid one (a reading changed, a signature byte flipped) is invalid."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.fiscal import ecdsa_pure
from gateway.fiscal.ocmf import ALL, PureKey, load_key, parse, verify
from tests.helpers import EVPAY, subprocess_env

DATA = Path(__file__).parent.parent / "data" / "ocmf"
RECORDS: list[dict[str, Any]] = json.loads(
    (DATA / "field_records.json").read_text(encoding="utf-8")
)
IDS = [r["id"] for r in RECORDS]


@pytest.mark.parametrize("entry", RECORDS, ids=IDS)
def test_each_real_record_gets_the_transparency_softwares_verdict(entry: dict[str, Any]) -> None:
    record = parse(entry["record"])
    verdict = verify(record, load_key(entry["key"], record.algorithm))
    assert verdict.valid is entry["expect_valid"], verdict.reason


def _mutations(text: str) -> list[str]:
    payload_end = text.rindex("|")
    digit = next(i for i in range(payload_end - 1, 0, -1) if text[i].isdigit())
    changed = text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1 :]
    sd = text.rindex(str(parse(text).signature["SD"])) + 20  # a byte inside r
    flipped = text[:sd] + ("0" if text[sd] != "0" else "1") + text[sd + 1 :]
    return [changed, flipped]


VALID = [r for r in RECORDS if r["expect_valid"]]


@pytest.mark.parametrize("entry", VALID, ids=[r["id"] for r in VALID])
def test_every_mutation_of_a_valid_record_is_invalid(entry: dict[str, Any]) -> None:
    for text in _mutations(entry["record"]):
        record = parse(text)
        assert not verify(record, load_key(entry["key"], record.algorithm)).valid


@pytest.mark.parametrize(
    "entry_id",
    ["safe-ebz-ld3-secp192r1-1", "safe-isabellenhuette-bare-xy-key", "safe-htb-secp192k1-1"],
)
def test_evpay_meter_verify_accepts_the_records_it_refused(entry_id: str, tmp_path: Path) -> None:
    entry = next(r for r in RECORDS if r["id"] == entry_id)
    (tmp_path / "record.txt").write_text(entry["record"], encoding="utf-8")
    record_file = "@" + str(tmp_path / "record.txt")
    done = subprocess.run(
        [*EVPAY, "meter", "verify", record_file, "--key", entry["key"], "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["valid"] is True


def test_the_curve_names_are_read_as_meters_spell_them() -> None:
    entry = next(r for r in RECORDS if r["id"] == "safe-ebz-ld3-secp192r1-2")
    for spelling in ("ECDSA-SECP192R1-SHA256", "ECDSA-secp192r1-SHA256"):
        text = entry["record"].replace("ECDSA-secp192r1-SHA256", spelling)
        record = parse(text)
        assert verify(record, load_key(entry["key"], record.algorithm)).valid
    assert {"secp192r1", "secp192k1", "secp224k1", "brainpoolP512r1", "secp521r1"} <= set(ALL)


def test_the_pure_verifier_against_openssl_on_a_shared_curve() -> None:
    """Test vector: OpenSSL signs on secp256k1, the plain-arithmetic verifier (given that curve's
    SEC 2 parameters) must agree, and must refuse a changed message."""
    k1 = ecdsa_pure.Curve(
        "secp256k1",
        "1.3.132.0.10",
        p=2**256 - 2**32 - 977,
        a=0,
        b=7,
        gx=0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
        gy=0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
        n=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    )
    private = ec.generate_private_key(ec.SECP256K1())
    numbers = private.public_key().public_numbers()
    point = (numbers.x, numbers.y)
    r, s = decode_dss_signature(private.sign(b"meter", ec.ECDSA(hashes.SHA256())))
    assert ecdsa_pure.verify(k1, point, hashlib.sha256(b"meter").digest(), r, s)
    assert not ecdsa_pure.verify(k1, point, hashlib.sha256(b"meteR").digest(), r, s)
    assert not ecdsa_pure.verify(k1, point, hashlib.sha256(b"meter").digest(), r, k1.n)


def test_a_point_off_the_curve_is_refused() -> None:
    curve = ecdsa_pure.CURVES["secp192k1"]
    with pytest.raises(ValueError, match="not on"):
        ecdsa_pure.point_from_bytes(curve, b"\x04" + bytes(47) + b"\x01")
    key = load_key(
        next(r for r in RECORDS if "secp192k1" in r["id"])["key"], "ECDSA-secp192k1-SHA256"
    )
    assert isinstance(key, PureKey) and key.curve.name == "secp192k1"


JS_VECTORS: dict[str, Any] = json.loads(
    (DATA / "ocmf_js_verify_vectors.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("case", JS_VECTORS["cases"], ids=[c["name"] for c in JS_VECTORS["cases"]])
def test_the_ocmf_js_vectors_get_their_expected_verdict(case: dict[str, Any]) -> None:
    signature = json.dumps({"SA": f"ECDSA-{case['curve']}-SHA256", "SD": case["signature"]})
    record = parse(f"OCMF|{case['data']}|{signature}")
    assert verify(record, load_key(case["spki"], record.algorithm)).valid is case["expected"]
