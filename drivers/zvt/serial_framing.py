"""ZVT serial framing (PA00P016 ch. 3): ``DLE STX <APDU, DLE doubled> DLE ETX CRClo CRChi``.

The CRC is CRC-16/KERMIT (reflected 0x8408, init 0, no final XOR) over the unstuffed APDU
followed by ETX, sent low byte first. ACK (06) and NAK (15) are single raw bytes outside
any frame. ``FrameDecoder`` takes bytes in any chunking and resynchronises on the next
``DLE STX`` after line noise or a broken frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

DLE, STX, ETX, ACK, NAK = 0x10, 0x02, 0x03, 0x06, 0x15
MAX_FRAME_DATA = 0xFFFF + 5  # the longest APDU: 2 control + 3 length + 65535 data


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def frame(apdu: bytes) -> bytes:
    crc = crc16(apdu + bytes([ETX]))
    return bytes([DLE, STX]) + apdu.replace(b"\x10", b"\x10\x10") + bytes([DLE, ETX, crc & 0xFF, crc >> 8])


@dataclass(frozen=True, slots=True)
class FrameReceived:
    apdu: bytes


@dataclass(frozen=True, slots=True)
class BadFrame:
    reason: str


@dataclass(frozen=True, slots=True)
class AckReceived:
    pass


@dataclass(frozen=True, slots=True)
class NakReceived:
    pass


FramingEvent = FrameReceived | BadFrame | AckReceived | NakReceived


class _S(Enum):
    IDLE = auto()
    IDLE_DLE = auto()
    DATA = auto()
    DATA_DLE = auto()
    CRC_LO = auto()
    CRC_HI = auto()


class FrameDecoder:
    def __init__(self) -> None:
        self._state = _S.IDLE
        self._data = bytearray()
        self._crc_lo = 0
        self.noise = 0  # bytes discarded outside frames

    @property
    def in_frame(self) -> bool:
        return self._state not in (_S.IDLE, _S.IDLE_DLE)

    def reset(self) -> None:
        self._state = _S.IDLE
        self._data.clear()

    def feed(self, data: bytes) -> list[FramingEvent]:
        events: list[FramingEvent] = []
        for byte in data:
            event = self._byte(byte)
            if event is not None:
                events.append(event)
        return events

    def _byte(self, byte: int) -> FramingEvent | None:
        state = self._state
        if state is _S.IDLE:
            if byte == DLE:
                self._state = _S.IDLE_DLE
            elif byte == ACK:
                return AckReceived()
            elif byte == NAK:
                return NakReceived()
            else:
                self.noise += 1
            return None
        if state is _S.IDLE_DLE:
            if byte == STX:
                self._state, self._data = _S.DATA, bytearray()
            else:
                self.noise += 2
                self._state = _S.IDLE_DLE if byte == DLE else _S.IDLE
            return None
        if state is _S.DATA:
            if byte == DLE:
                self._state = _S.DATA_DLE
            else:
                return self._append(byte)
            return None
        if state is _S.DATA_DLE:
            if byte == DLE:
                self._state = _S.DATA
                return self._append(DLE)
            if byte == ETX:
                self._state = _S.CRC_LO
                return None
            if byte == STX:  # a new frame began: the old one was cut off
                self._data = bytearray()
                self._state = _S.DATA
                return BadFrame("frame interrupted by a new DLE STX")
            self.reset()
            return BadFrame(f"DLE followed by {byte:02X} inside a frame")
        if state is _S.CRC_LO:
            self._crc_lo, self._state = byte, _S.CRC_HI
            return None
        # CRC_HI
        self._state = _S.IDLE
        received = self._crc_lo | (byte << 8)
        apdu = bytes(self._data)
        self._data = bytearray()
        expected = crc16(apdu + bytes([ETX]))
        if received != expected:
            return BadFrame(f"CRC mismatch: got {received:04X}, computed {expected:04X}")
        return FrameReceived(apdu)

    def _append(self, byte: int) -> FramingEvent | None:
        self._data.append(byte)
        if len(self._data) > MAX_FRAME_DATA:
            self.reset()
            return BadFrame("frame longer than the largest APDU")
        return None
