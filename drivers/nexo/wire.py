"""One encoding chosen per terminal: ``xml`` (nexo 3.1 XML, PAX/Swedbank) or ``adyen-json``
(nexo in JSON, sealed with Adyen's key when one is configured; clear only as a lab setting).

Sans-I/O: bytes in, ``Message`` out and back; the nonce for Adyen's encryption is given by the
caller (``os.urandom(16)`` at the edge, fixed in tests).
"""

from __future__ import annotations

from typing import Literal

from drivers.nexo import adyen_crypto, codec_json, codec_xml
from drivers.nexo.adyen_crypto import AdyenKey, DerivedKey
from drivers.nexo.errors import NexoSecurityError
from drivers.nexo.messages import Message

Encoding = Literal["xml", "adyen-json"]
ENCODINGS: tuple[Encoding, ...] = ("xml", "adyen-json")
# Where a POI listens, per encoding (Swedbank's nexo 3.1 path; Adyen's local endpoint).
PATHS: dict[Encoding, str] = {"xml": "/EPASSaleToPOI/3.1", "adyen-json": "/nexo"}


class Wire:
    def __init__(self, encoding: Encoding, key: AdyenKey | None = None) -> None:
        self.encoding = encoding
        self.key = key
        self._dk = DerivedKey.derive(key.passphrase) if key is not None else None

    @property
    def content_type(self) -> str:
        return codec_xml.CONTENT_TYPE if self.encoding == "xml" else codec_json.CONTENT_TYPE

    def encode(self, message: Message, nonce: bytes) -> bytes:
        if self.encoding == "xml":
            return codec_xml.encode(message)
        if self.key is None or self._dk is None:
            return codec_json.encode(message)
        clear_obj = codec_json.to_obj(message)
        clear = codec_json.dumps(clear_obj).encode()
        header = clear_obj[message.root]["MessageHeader"]
        sealed = adyen_crypto.seal(clear, header, message.root, self.key, self._dk, nonce)
        return codec_json.dumps(sealed).encode()

    def decode(self, data: bytes) -> Message:
        if self.encoding == "xml":
            return codec_xml.decode(data)
        obj = codec_json.loads(data)
        if adyen_crypto.is_secured(obj):
            if self.key is None or self._dk is None:
                raise NexoSecurityError("an encrypted message but no key is configured")
            return codec_json.decode(adyen_crypto.open_secured(obj, self.key, self._dk))
        if self.key is not None:
            raise NexoSecurityError("a clear message where the key requires encryption")
        return codec_json.from_obj(obj)
