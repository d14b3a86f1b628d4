"""Adyen's application-level encryption for the local Terminal API ("AdyenCryptoVersion" 1).

80 bytes from PBKDF2-HMAC-SHA1(passphrase, "AdyenNexoV1Salt", 4000 iterations): HMAC key
[0:32], AES-256 key [32:64], IV [64:80]. Each message gets a fresh 16-byte nonce XORed into the
IV; the body is AES-CBC/PKCS7 of the clear JSON (``NexoBlob``), and the ``SecurityTrailer``
carries the key's identifier and version, the nonce and HMAC-SHA256 of the clear JSON. The
header travels in clear so the POI can route it. Sans-I/O: the nonce is given by the caller.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass, field
from hashlib import pbkdf2_hmac, sha256
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drivers.nexo.errors import NexoSecurityError

SALT = b"AdyenNexoV1Salt"
ITERATIONS = 4000
CRYPTO_VERSION = 1


@dataclass(frozen=True, slots=True)
class AdyenKey:
    """The shared key a technician sets in the Customer Area; ``passphrase`` is a secret."""

    identifier: str
    version: int
    passphrase: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DerivedKey:
    hmac_key: bytes = field(repr=False)
    cipher_key: bytes = field(repr=False)
    iv: bytes = field(repr=False)

    @classmethod
    def derive(cls, passphrase: str) -> DerivedKey:
        k = pbkdf2_hmac("sha1", passphrase.encode(), SALT, ITERATIONS, 80)
        return cls(k[0:32], k[32:64], k[64:80])


def _cipher(dk: DerivedKey, nonce: bytes) -> Cipher[modes.CBC]:
    if len(nonce) != 16:
        raise NexoSecurityError(f"nonce must be 16 bytes, got {len(nonce)}")
    iv = bytes(a ^ b for a, b in zip(dk.iv, nonce, strict=True))
    return Cipher(algorithms.AES(dk.cipher_key), modes.CBC(iv))


def seal(
    clear: bytes, header: dict[str, Any], root: str, key: AdyenKey, dk: DerivedKey, nonce: bytes
) -> dict[str, Any]:
    """The secured message for ``clear`` (the whole clear JSON message) with ``header``."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(clear) + padder.finalize()
    enc = _cipher(dk, nonce).encryptor()
    blob = enc.update(padded) + enc.finalize()
    return {
        root: {
            "MessageHeader": header,
            "NexoBlob": base64.b64encode(blob).decode(),
            "SecurityTrailer": {
                "AdyenCryptoVersion": CRYPTO_VERSION,
                "KeyIdentifier": key.identifier,
                "KeyVersion": key.version,
                "Nonce": base64.b64encode(nonce).decode(),
                "Hmac": base64.b64encode(hmac.digest(dk.hmac_key, clear, sha256)).decode(),
            },
        }
    }


def is_secured(obj: Any) -> bool:
    return isinstance(obj, dict) and any(
        isinstance(v, dict) and "NexoBlob" in v for v in obj.values()
    )


def open_secured(obj: Any, key: AdyenKey, dk: DerivedKey) -> bytes:
    """The clear JSON of a secured message, after checking key, version and HMAC."""
    try:
        ((_root, inner),) = obj.items()
        trailer = inner["SecurityTrailer"]
        blob = base64.b64decode(inner["NexoBlob"], validate=True)
        nonce = base64.b64decode(trailer["Nonce"], validate=True)
        mac = base64.b64decode(trailer["Hmac"], validate=True)
        ident, version = trailer["KeyIdentifier"], trailer["KeyVersion"]
        crypto_version = trailer["AdyenCryptoVersion"]
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise NexoSecurityError(f"malformed secured message: {exc!r}") from None
    if crypto_version != CRYPTO_VERSION:
        raise NexoSecurityError(f"AdyenCryptoVersion {crypto_version} is not supported")
    if ident != key.identifier or version != key.version:
        raise NexoSecurityError(f"key {ident!r} v{version} is not the configured key")
    if len(blob) == 0 or len(blob) % 16:
        raise NexoSecurityError("NexoBlob is not whole AES blocks")
    dec = _cipher(dk, nonce).decryptor()
    padded = dec.update(blob) + dec.finalize()
    try:
        unpadder = padding.PKCS7(128).unpadder()
        clear = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise NexoSecurityError("bad padding (wrong key?)") from None
    if not hmac.compare_digest(hmac.digest(dk.hmac_key, clear, sha256), mac):
        raise NexoSecurityError("HMAC does not match")
    return clear


def header_of(clear_obj: Any) -> dict[str, Any]:
    """The clear header of a clear message object (sent beside the blob)."""
    ((_root, inner),) = clear_obj.items()
    header: dict[str, Any] = json.loads(json.dumps(inner["MessageHeader"]))
    return header
