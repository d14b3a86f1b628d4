"""``evpay simulate terminal --protocol nexo``: the nexo POI simulator on loopback HTTP(S).

Kept beside ``simulate_cmd`` so the ZVT options stay as they were; the variants are the ones
``drivers.sim.nexo_poi.PoiConfig`` documents.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.cli.lazy_choices import choices_from

if TYPE_CHECKING:
    from drivers.sim.nexo_poi import NexoPoi


def add_arguments(term: argparse.ArgumentParser) -> None:
    term.add_argument("--protocol", choices=("zvt", "nexo"), default="zvt")
    nexo = term.add_argument_group("nexo POI (with --protocol nexo)")
    choices_from(nexo.add_argument("--encoding", default="xml"), "drivers.nexo.wire:ENCODINGS")
    nexo.add_argument("--poi-id", default="POI-SIM-1")
    nexo.add_argument("--no-reservations", action="store_true", help="Normal and Refund only")
    nexo.add_argument("--partial", type=int, metavar="MINOR", help="approve at most this much")
    nexo.add_argument("--lose-answers", type=int, default=0, metavar="N", help="act, then cut")
    nexo.add_argument("--busy", type=int, default=0, metavar="N", help="answer Busy N times")
    nexo.add_argument(
        "--in-progress", type=int, default=0, metavar="N", help="TransactionStatus: InProgress N x"
    )
    nexo.add_argument("--delay", type=float, default=0.0, metavar="S", help="a slow POI")
    nexo.add_argument(
        "--refuse-open-reversal", action="store_true", help="no Reversal of an open reservation"
    )
    nexo.add_argument("--key-id", default="EvpayLabKey", help="Adyen key identifier")
    nexo.add_argument("--key-version", type=int, default=1)
    nexo.add_argument(
        "--passphrase-env", default="EVPAY_NEXO_PASSPHRASE", help="env var with the passphrase"
    )
    nexo.add_argument("--tls-cert", help="PEM certificate for https:// (Adyen)")
    nexo.add_argument("--tls-key", help="PEM key for --tls-cert")


def run(args: argparse.Namespace) -> int:
    from drivers.nexo.adyen_crypto import AdyenKey
    from drivers.sim.nexo_poi import NexoPoi, PoiConfig

    url = urlsplit(args.listen or "")
    if url.scheme not in ("http", "https") or url.hostname != "127.0.0.1":
        print("--listen takes http://127.0.0.1:PORT (or https:// with --tls-cert/--tls-key)")
        return 2
    tls = None
    if url.scheme == "https":
        if not (args.tls_cert and args.tls_key):
            print("https:// needs --tls-cert and --tls-key")
            return 2
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    key = None
    if args.encoding == "adyen-json":
        passphrase = os.environ.get(args.passphrase_env)
        if passphrase:
            key = AdyenKey(args.key_id, args.key_version, passphrase)
    config = PoiConfig(
        encoding=args.encoding,
        poi_id=args.poi_id,
        key=key,
        reservations=not args.no_reservations,
        partial_minor=args.partial,
        lose_answers=args.lose_answers,
        busy=args.busy,
        in_progress=args.in_progress,
        delay_s=args.delay,
        refuse_open_reversal=args.refuse_open_reversal,
    )
    return asyncio.run(_serve(NexoPoi(config), url.scheme, url.port or 0, tls))


async def _serve(poi: NexoPoi, scheme: str, port: int, tls: ssl.SSLContext | None) -> int:
    from drivers.nexo.wire import PATHS
    from drivers.sim.nexo_poi import serve_nexo_poi

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner, bound = await serve_nexo_poi(poi, "127.0.0.1", port, tls)
    enc = poi.config.encoding
    sealed = "encrypted" if poi.config.key else "clear"
    extra = f", {sealed}" if enc == "adyen-json" else ""
    print(
        f"simulated nexo POI {poi.config.poi_id} ({enc}{extra}) listening on "
        f"{scheme}://127.0.0.1:{bound}{PATHS[enc]}",
        flush=True,
    )
    await stop.wait()
    await runner.cleanup()
    print(f"nexo POI: {len(poi.ledger)} transactions, booked {poi.booked()}", flush=True)
    return 0
