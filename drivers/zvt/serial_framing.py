"""ZVT serial framing (PA00P016 ch. 3): ``DLE STX <APDU, DLE doubled> DLE ETX CRClo CRChi``.

The CRC is CRC-16/KERMIT (reflected 0x8408, init 0, no final XOR) over the unstuffed APDU
followed by ETX, sent low byte first. ACK (06) and NAK (15) are single raw bytes outside
any frame. ``FrameDecoder`` takes bytes in any chunking and resynchronises on the next
``DLE STX`` after line noise or a broken frame.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from enum import Enum, auto
from typing import NamedTuple

DLE, STX, ETX, ACK, NAK = 0x10, 0x02, 0x03, 0x06, 0x15
MAX_FRAME_DATA = 0xFFFF + 5  # the longest APDU: 2 control + 3 length + 65535 data


# CRC-16/KERMIT is CRC-16/XMODEM (``binascii.crc_hqx``, in C) with every byte bit-reversed on
# the way in and the 16-bit result bit-reversed on the way out (both have init 0 and no final
# XOR), so the CRC runs at C speed instead of a Python loop per byte.
_REFLECT = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc16(data: bytes | bytearray) -> int:
    crc = binascii.crc_hqx(data.translate(_REFLECT), 0)
    return (_REFLECT[crc & 0xFF] << 8) | _REFLECT[crc >> 8]


def frame_crc(apdu: bytes | bytearray) -> int:
    """The frame's CRC: over the unstuffed APDU, then ETX (0xC0 reflected)."""
    crc = binascii.crc_hqx(b"\xc0", binascii.crc_hqx(apdu.translate(_REFLECT), 0))
    return (_REFLECT[crc & 0xFF] << 8) | _REFLECT[crc >> 8]


def frame(apdu: bytes) -> bytes:
    crc = frame_crc(apdu)
    return (
        bytes([DLE, STX])
        + apdu.replace(b"\x10", b"\x10\x10")
        + bytes([DLE, ETX, crc & 0xFF, crc >> 8])
    )


class FrameReceived(NamedTuple):
    """A named tuple, built once per frame where a frozen dataclass costs a third more."""

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


_IDLE = _S.IDLE
_LONGEST_FRAME = MAX_FRAME_DATA + 2  # DLE STX and the data, up to the DLE of DLE ETX
crc_hqx = binascii.crc_hqx
_new = tuple.__new__


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
        """Inside a frame, runs of plain bytes are found with ``bytes.find(DLE)`` and copied as
        slices, and a frame's start, a stuffed DLE and a frame's end with its CRC are taken
        whole when the chunk holds them; ``_byte`` takes, one at a time, what a chunk boundary
        splits, the bytes outside frames and the errors."""
        events: list[FramingEvent] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _IDLE and data.startswith(b"\x10\x02", pos):
                stop = data.find(b"\x10", pos + 2)
                if 0 <= stop <= end - 4 and data[stop + 1] == ETX and stop - pos <= _LONGEST_FRAME:
                    apdu = data[pos + 2 : stop]  # a whole frame with no stuffed DLE: one slice
                    received = data[stop + 2] | (data[stop + 3] << 8)
                    crc = crc_hqx(
                        b"\xc0", crc_hqx(apdu.translate(_REFLECT), 0)
                    )  # frame_crc, inlined
                    if received == (_REFLECT[crc & 0xFF] << 8) | _REFLECT[crc >> 8]:
                        events.append(_new(FrameReceived, (apdu,)))
                    else:
                        events.append(self._check(apdu, received))
                    pos = stop + 4
                    continue
                self._state, self._data = _S.DATA, bytearray()
                pos += 2
                continue
            if state is not _S.DATA:
                event = self._byte(data[pos])
                pos += 1
                if event is not None:
                    events.append(event)
                continue
            stop = data.find(b"\x10", pos)
            if stop < 0:
                stop = end
            room = MAX_FRAME_DATA - len(self._data) - (stop - pos)
            if room < 0:  # the frame outgrows the largest APDU inside this run
                self.reset()
                events.append(BadFrame("frame longer than the largest APDU"))
                pos = stop + room + 1
                continue
            self._data += data[pos:stop]
            pos = stop
            after = data[pos + 1 : pos + 2]
            if after == b"\x10":  # a stuffed DLE
                self._data.append(DLE)
                pos += 2
            elif after == b"\x03" and pos + 4 <= end:  # DLE ETX CRClo CRChi: the frame is whole
                self._state = _S.IDLE
                events.append(self._check(bytes(self._data), data[pos + 2] | (data[pos + 3] << 8)))
                self._data = bytearray()
                pos += 4
            elif pos < end:
                self._state = _S.DATA_DLE
                pos += 1
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
        apdu, self._data = bytes(self._data), bytearray()
        return self._check(apdu, self._crc_lo | (byte << 8))

    @staticmethod
    def _check(apdu: bytes, received: int) -> FramingEvent:
        expected = frame_crc(apdu)
        if received != expected:
            return BadFrame(f"CRC mismatch: got {received:04X}, computed {expected:04X}")
        return FrameReceived(apdu)

    def _append(self, byte: int) -> FramingEvent | None:
        self._data.append(byte)
        if len(self._data) > MAX_FRAME_DATA:
            self.reset()
            return BadFrame("frame longer than the largest APDU")
        return None
