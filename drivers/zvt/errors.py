"""ZVT decoding errors: malformed input raises ZvtDecodeError, never IndexError or ValueError."""

from __future__ import annotations

from drivers.errors import ProtocolError


class ZvtDecodeError(ProtocolError):
    """Bytes from a peer that are not valid ZVT; says where and why."""

    code = "zvt_decode_error"

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        self.why = why
        super().__init__(f"{where}: {why}")
