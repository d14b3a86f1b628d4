"""ZVT codec throughput on the six-APDU mix, and the serial framing decoder against its encoder.

    python bench/zvt_codec.py [--seconds 3]

The mix is the one issue 15 measured against ecrterm (the most used Python ZVT library): a
pre-authorisation 06 22, a 16-BMP status information 04 0F, a completion 06 0F, a book
total 06 24, a partial reversal 06 23 and an intermediate status 04 FF. The 06 0F and 04 FF
are ecrterm's own test vectors (wirelane/ecrterm, ecrterm/tests/test_parsing.py); the others
were built by our encoder and checked to round-trip through ecrterm unchanged. A frame is one
decode (bytes to message) plus one encode (message to bytes). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import interleaved
from drivers.zvt import messages as m
from drivers.zvt.serial_framing import FrameDecoder, frame

MIX = tuple(
    bytes.fromhex(apdu)
    for apdu in (
        "06221e1940490978040000000050000610e90e1f620241431f6306333834484832",
        "040f5a2700040000000025004909780c2255580d040522f0f8559883eeeeee80748702313b373530303731"
        "00000b000975196029525235350e24058a068c018bf1f14d617374657243617264002a383034303131393236202020202020",
        "060f1119002952001233490978060527031401ff",
        "06240f870231040000000011694909781940",
        "06230d87023149097804000000003831",
        "04ff1e0a01061a241807164269747465204b617274652065696e737465636b656e",
    )
)
FRAMED = tuple(frame(apdu) for apdu in MIX)


def codec_round() -> None:
    for raw in MIX:
        m.decode(raw).to_apdu().encode()


def frame_round() -> None:
    for raw in MIX:
        frame(raw)


_decoder = FrameDecoder()


def deframe_round() -> None:
    for framed in FRAMED:
        _decoder.feed(framed)


MIX_BYTES = sum(len(f) for f in FRAMED)


def figures(seconds: float, ecrterm: Path | None = None) -> dict[str, float]:
    """frames/s of the codec on the mix; framing encoder and decoder in bytes/s; with
    ``ecrterm`` (a checkout of wirelane/ecrterm, not installable here) its frames/s on the same
    mix, measured in the same interleaved rounds."""
    fns: dict[str, tuple[Callable[[], object], int]] = {
        "codec": (codec_round, len(MIX)),
        "frame": (frame_round, MIX_BYTES),
        "deframe": (deframe_round, MIX_BYTES),
    }
    if ecrterm is not None:
        fns["ecrterm"] = (_ecrterm_round(ecrterm), len(MIX))
    return interleaved(fns, seconds)


def _ecrterm_round(checkout: Path) -> Callable[[], object]:
    sys.path.insert(0, str(checkout))
    from ecrterm.packets.base_packets import Packet

    for raw in MIX:  # the same bytes, and ecrterm gives them back unchanged
        if Packet.parse(raw).serialize() != raw:
            raise SystemExit(f"ecrterm does not round-trip {raw.hex()}")

    def ecrterm_round() -> None:
        for raw in MIX:
            Packet.parse(raw).serialize()

    return ecrterm_round


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--ecrterm", type=Path, help="a checkout of wirelane/ecrterm, measured beside ours"
    )
    args = parser.parse_args()
    seconds = args.seconds
    got = figures(seconds, args.ecrterm)
    print(f"ZVT codec, six-APDU mix, {seconds:.0f} s per figure (median of interleaved rounds)")
    print(f"  encode+decode             {got['codec']:>12,.0f} frames/s")
    print(f"  serial framing encode     {got['frame'] / 1e6:>12,.1f} MB/s")
    print(
        f"  serial framing decode     {got['deframe'] / 1e6:>12,.1f} MB/s "
        f"({got['deframe'] / got['frame']:.0%} of the encoder)"
    )
    if "ecrterm" in got:
        ratio = got["codec"] / got["ecrterm"]
        print(
            f"  ecrterm encode+decode     {got['ecrterm']:>12,.0f} frames/s: ours is {ratio:.1f}x"
        )


if __name__ == "__main__":
    main()
