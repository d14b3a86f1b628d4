"""OCMF signed meter values: a real public record, and records signed here on every supported
curve, in every key and signature form real meters use; tampering, wrong keys, truncation and
a `|` inside a field; `evpay meter verify` as a technician runs it."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.fiscal.ocmf import CURVES, OcmfError, load_key, parse, verify
from tests.helpers import EVPAY, subprocess_env

DATA = Path(__file__).resolve().parents[1] / "data" / "ocmf"
KEBA = (DATA / "keba_kcp30.txt").read_text(encoding="utf-8").strip()
KEBA_KEY = (DATA / "keba_kcp30.key").read_text(encoding="utf-8").strip()
HASH = {"secp384r1": "SHA384", "brainpoolP384r1": "SHA384"}


def sign(
    curve: str, payload: dict[str, object] | str, *, raw: bool = False, b64: bool = False
) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(CURVES[curve])
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    digest = HASH.get(curve, "SHA256")
    der = key.sign(text.encode(), ec.ECDSA(getattr(hashes, digest)()))
    signature = der
    if raw:
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    sd = base64.b64encode(signature).decode() if b64 else signature.hex().upper()
    sig: dict[str, str] = {"SA": f"ECDSA-{curve}-{digest}", "SD": sd}
    if b64:
        sig["SE"] = "base64"
    return f"OCMF|{text}|{json.dumps(sig)}", key


PAYLOAD: dict[str, object] = {
    "FV": "1.0",
    "GI": "TEST",
    "MS": "M-1",
    "RD": [
        {"TM": "2026-01-05T08:00:00,000+0000 S", "TX": "B", "RV": 1.25, "RU": "kWh", "ST": "G"},
        {"TM": "2026-01-05T09:00:00,000+0000 S", "TX": "E", "RV": 12.5, "RU": "kWh", "ST": "G"},
    ],
}


def der_hex(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        .hex()
    )


def point(key: ec.EllipticCurvePrivateKey, compressed: bool = False) -> bytes:
    fmt = (
        serialization.PublicFormat.CompressedPoint
        if compressed
        else serialization.PublicFormat.UncompressedPoint
    )
    return key.public_key().public_bytes(serialization.Encoding.X962, fmt)


def test_a_real_public_record_verifies_and_its_readings_are_read() -> None:
    record = parse(KEBA)
    assert verify(record, load_key(KEBA_KEY)).valid
    assert [(r.kind, str(r.energy_wh)) for r in record.readings] == [
        ("B", "259.6000"),
        ("E", "259.7000"),
    ]


def test_the_real_record_tampered_is_invalid() -> None:
    tampered = KEBA.replace('"RV":0.2597', '"RV":0.2598')
    assert not verify(parse(tampered), load_key(KEBA_KEY)).valid


@pytest.mark.parametrize("curve", sorted(CURVES))
@pytest.mark.parametrize(
    "form", ["der-hex", "der-hex-spaced", "der-base64", "point", "point-compressed"]
)
@pytest.mark.parametrize("signature", ["der-hex", "raw-hex", "der-base64"])
def test_every_curve_key_form_and_signature_form(curve: str, form: str, signature: str) -> None:
    text, key = sign(curve, PAYLOAD, raw=signature == "raw-hex", b64=signature == "der-base64")
    key_text = {
        "der-hex": der_hex(key),
        "der-hex-spaced": " ".join(der_hex(key)[i : i + 2] for i in range(0, len(der_hex(key)), 2)),
        "der-base64": base64.b64encode(bytes.fromhex(der_hex(key))).decode(),
        "point": point(key).hex(),
        "point-compressed": point(key, compressed=True).hex(),
    }[form]
    record = parse(text)
    verdict = verify(record, load_key(key_text, record.algorithm))
    assert verdict.valid, verdict.reason


def test_a_raw_signature_that_begins_like_der_still_verifies() -> None:
    """One raw r||s signature in 256 begins with 0x30, the DER sequence tag."""
    for _ in range(20_000):
        text, key = sign("secp256r1", PAYLOAD, raw=True)
        record = parse(text)
        if bytes.fromhex(str(record.signature["SD"]))[0] == 0x30:
            break
    else:
        pytest.fail("no raw signature beginning with 0x30 in 20,000 tries")
    assert verify(record, load_key(point(key).hex(), record.algorithm)).valid


def test_a_bad_signature_and_a_wrong_key_are_invalid() -> None:
    text, key = sign("secp256r1", PAYLOAD)
    other = ec.generate_private_key(ec.SECP256R1())
    assert not verify(parse(text), load_key(der_hex(other))).valid
    sig = json.loads(text.split("|", 2)[2])
    flipped = sig["SD"][:-2] + ("00" if sig["SD"][-2:] != "00" else "01")
    bad = text.replace(sig["SD"], flipped)
    verdict = verify(parse(bad), load_key(der_hex(key)))  # the right key, a changed signature
    assert not verdict.valid
    k1 = ec.generate_private_key(ec.SECP256K1())
    mismatch = verify(parse(text), load_key(der_hex(k1)))
    assert not mismatch.valid and "secp256k1" in mismatch.reason


def test_the_payload_is_kept_byte_exact_and_a_pipe_inside_a_field_does_not_split_it() -> None:
    payload = (
        '{"FV":"1.0","GI":"A|B","ID":"x\\"|y","RD":[{"TM":"t","RV":2.000,"RU":"kWh","ST":"G"}]}'
    )
    text, key = sign("secp256r1", payload)
    record = parse(text)
    assert record.payload_text == payload and record.payload["GI"] == "A|B"
    assert verify(record, load_key(der_hex(key))).valid
    assert (
        str(record.readings[0].energy_wh) == "2000.000"
    )  # the meter's own decimals, never a float


@pytest.mark.parametrize(
    "text",
    [
        KEBA[:40],
        KEBA[: KEBA.index('|{"SD"')],
        "OCMF|",
        "hello",
        "OCMF|{}",
        'OCMF|{"a":1}|{"SA":"x"}',
        KEBA[:-2],
        'OCMF|{"RD":[{"RV":"abc"}]}|{"SD":"00"}',
        'OCMF|{"RD":[{"RV":NaN}]}|{"SD":"00"}',
        'OCMF|{"RD":[{"RV":true}]}|{"SD":"00"}',
    ],
    ids=[
        "cut-payload",
        "no-signature",
        "empty",
        "not-ocmf",
        "payload-only",
        "no-SD",
        "cut-signature",
        "RV-text",
        "RV-NaN",
        "RV-boolean",
    ],
)
def test_a_truncated_or_malformed_record_is_unreadable(text: str) -> None:
    with pytest.raises(OcmfError):
        parse(text)


def test_the_hex_form_is_read_and_the_digest_identifies_duplicates() -> None:
    assert parse(KEBA.encode().hex()).digest == parse(KEBA).digest


def evpay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVPAY, "meter", "verify", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )


def test_meter_verify_cli_exit_codes(tmp_path: Path) -> None:
    ok = evpay(KEBA, "--key-file", str(DATA / "keba_kcp30.key"))
    assert ok.returncode == 0 and ok.stdout.startswith("VALID")
    tampered = evpay(KEBA.replace('"RV":0.2597', '"RV":1.2597'), "--key", KEBA_KEY, "--json")
    assert tampered.returncode == 1 and json.loads(tampered.stdout)["valid"] is False
    unreadable = evpay("OCMF|{broken", "--key", KEBA_KEY, "--json")
    assert unreadable.returncode == 2 and json.loads(unreadable.stdout)["readable"] is False
    record_file = tmp_path / "r.txt"
    record_file.write_text(KEBA, encoding="utf-8")
    from_file = evpay(f"@{record_file}", "--key", KEBA_KEY, "--json")
    assert from_file.returncode == 0 and len(json.loads(from_file.stdout)["readings"]) == 2
    missing = evpay(KEBA, "--key-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read" in missing.stdout
