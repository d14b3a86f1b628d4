"""ZVT codec throughput: frames encoded + decoded per second, at every layer.

    python bench/zvt_codec.py [--seconds 3]

Prints figures; asserts nothing (targets are read by people, not by flaky timed tests).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from drivers.zvt import messages as m
from drivers.zvt.fields import Tlv, decode_tlv, encode_tlv
from drivers.zvt.serial_framing import FrameDecoder, frame

APPROVAL = (
    bytes.fromhex("040F5A27000400000000250049097 80C2255580D040522F0F8559883EEEEEE8074870231 3B".replace(" ", ""))
    + b"750071\x00\x00"
    + bytes.fromhex("0B000975196029525235350E24058A068C018BF1F1")
    + b"MasterCard\x00\x2a804011926      "
)


def rate(name: str, seconds: float, fn: Callable[[], object]) -> None:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            fn()
        n += 200
    elapsed = time.perf_counter() - start
    print(f"{name:<52} {n / elapsed:>12,.0f} /s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    seconds = parser.parse_args().seconds
    preauth = m.pre_authorisation(2500, 978, tlv=[m.reference_tlv("AC", "384HH2")])
    preauth_raw = preauth.to_apdu().encode()
    framed = frame(APPROVAL)
    decoder = FrameDecoder()
    print(f"ZVT codec, {seconds:.0f} s per figure")
    rate("encode pre-auth message -> APDU bytes", seconds, lambda: preauth.to_apdu().encode())
    rate("decode APDU bytes -> pre-auth message", seconds, lambda: m.decode(preauth_raw))

    def approval_fields() -> object:
        x = m.decode(APPROVAL)
        return (x.amount, x.receipt_number, x.masked_pan, x.aid, x.trace_number, x.terminal_id)

    rate("decode 04 0F approval (16 BMPs) + read 6 fields", seconds, approval_fields)
    rate("serial frame encode (DLE stuffing + CRC), 93 B", seconds, lambda: frame(APPROVAL))
    rate("serial frame decode, 93 B", seconds, lambda: decoder.feed(framed))
    rate("full round trip: encode+frame+deframe+decode", seconds,
         lambda: m.decode(decoder.feed(frame(preauth.to_apdu().encode()))[0].apdu))  # type: ignore[union-attr]  # fmt: skip
    reference = [Tlv(0xE9, children=(Tlv(0x1F62, b"AC"), Tlv(0x1F63, b"384HH2")))]
    rate("TLV encode+decode (E9 reference)", seconds, lambda: decode_tlv(encode_tlv(reference)))


if __name__ == "__main__":
    main()
