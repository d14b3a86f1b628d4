"""APDUs (PA00P016 ch. 2): CLASS INSTR LEN DATA, with the extended length ``FF lo hi``.

``ApduReader`` reassembles APDUs from a byte stream split anywhere (ZVT over TCP has no
framing: the spec requires tolerating arbitrarily split data).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.zvt.errors import ZvtDecodeError

MAX_DATA = 0xFFFF


@dataclass(frozen=True, slots=True)
class Apdu:
    cls: int
    instr: int
    data: bytes = b""

    @property
    def command(self) -> int:
        return (self.cls << 8) | self.instr

    def encode(self) -> bytes:
        n = len(self.data)
        if n > MAX_DATA:
            raise ValueError(f"APDU data of {n} bytes exceeds {MAX_DATA}")
        head = bytes([self.cls, self.instr])
        if n < 0xFF:
            return head + bytes([n]) + self.data
        return head + bytes([0xFF, n & 0xFF, n >> 8]) + self.data  # little-endian, per spec

    @classmethod
    def decode(cls, raw: bytes) -> Apdu:
        apdu, used = _split(raw, 0)
        if apdu is None:
            raise ZvtDecodeError("APDU", f"truncated: {len(raw)} bytes do not hold a whole APDU")
        if used != len(raw):
            raise ZvtDecodeError("APDU", f"{len(raw) - used} trailing bytes after the APDU")
        return apdu

    def __repr__(self) -> str:
        return f"Apdu({self.cls:02X} {self.instr:02X}, {len(self.data)} bytes)"


def _split(buf: bytes | bytearray, pos: int) -> tuple[Apdu | None, int]:
    """The APDU starting at ``pos`` and the offset after it, or (None, pos) if incomplete."""
    if len(buf) - pos < 3:
        return None, pos
    length = buf[pos + 2]
    start = pos + 3
    if length == 0xFF:
        if len(buf) - pos < 5:
            return None, pos
        length = buf[pos + 3] | (buf[pos + 4] << 8)
        start = pos + 5
    end = start + length
    if end > len(buf):
        return None, pos
    return Apdu(buf[pos], buf[pos + 1], bytes(buf[start:end])), end


class ApduReader:
    """Feed stream bytes, take whole APDUs out; keeps partial data between calls."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Apdu]:
        self._buf += data
        out: list[Apdu] = []
        pos = 0
        while True:
            apdu, pos_after = _split(self._buf, pos)
            if apdu is None:
                break
            out.append(apdu)
            pos = pos_after
        del self._buf[:pos]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        self._buf.clear()
