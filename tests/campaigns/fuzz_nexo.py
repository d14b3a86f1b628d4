"""The fuzz campaign's nexo targets: the XML and Adyen JSON decoders (clear and sealed with the
key) and the sale endpoint's parsing of what a POI POSTs to us.

Seeds are real wire bytes: the nexo driver runs once against the POI simulator over loopback
(login, diagnosis, a reservation topped up and completed, one reversed, a lost answer asked
about by TransactionStatus, a card read, display, print, the end of day), and every request and
answer that crossed is kept; Adyen's own JSON mocks (``tests/data/nexo``, MIT) are added to the
JSON targets. A decoder may answer only with the nexo errors (``NexoFormatError``,
``NexoSecurityError``); the sale endpoint's parsing also with nothing (an answer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from pathlib import Path

from drivers.money import Money
from drivers.nexo import codec_xml
from drivers.nexo import messages as nm
from drivers.nexo.asyncio.client import NexoOptions
from drivers.nexo.asyncio.terminal import NexoTerminal
from drivers.nexo.errors import NexoFormatError, NexoSecurityError
from drivers.nexo.model import (
    MessageCategory,
    MessageClass,
    MessageHeader,
    MessageType,
    OutputContent,
)
from drivers.nexo.sale_side import answer_poi
from drivers.nexo.wire import PATHS, Encoding, Wire
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from tests.campaigns.fuzz import Target
from tests.nexo.conftest import KEY

DATA = Path(__file__).resolve().parent.parent / "data" / "nexo"
ERRORS = (NexoFormatError, NexoSecurityError)
SALE_ID, POI_ID = "EVPAY-FUZZ", "POI-SIM-1"


async def _session(encoding: Encoding, sealed: bool, tmp: Path) -> list[bytes]:
    key = KEY if sealed else None
    poi = NexoPoi(PoiConfig(encoding=encoding, poi_id=POI_ID, key=key))
    runner, port = await serve_nexo_poi(poi)
    eur = functools.partial(Money, currency="EUR")
    term = NexoTerminal(
        "fuzz",
        NexoOptions(
            url=f"http://127.0.0.1:{port}{PATHS[encoding]}",
            encoding=encoding,
            sale_id=SALE_ID,
            poi_id=POI_ID,
            key=key,
            allow_plain_json=True,  # loopback seeds: the bytes are what matters, not the TLS
            retry_s=0.01,
            state_path=tmp / f"{encoding}-{sealed}.json",
        ),
    )
    try:
        await term.connect()
        await term.diagnose()
        pre = await term.preauthorize(eur(5000), "F1")
        assert pre.ref is not None
        await term.add_hold(pre.ref, None, eur(1000), "F1")
        poi.config.lose_answers = 1  # the completion's answer is lost: TransactionStatus
        await term.capture(pre.ref, eur(6000), eur(1234), "F1")
        other = await term.preauthorize(eur(2000), "F2")
        assert other.ref is not None
        await term.release(other.ref, eur(2000))
        await term.read_card(5)
        await term.display(["EVPAY", "Charging"], 5)
        await term.print_text(["EVPAY", "12.34 EUR"])
        await term.end_of_day()
    finally:
        await term.close()
        await runner.cleanup()
    return [*poi.raw, *poi.sent]


@functools.cache
def wire_samples(encoding: Encoding, sealed: bool = False) -> tuple[bytes, ...]:
    """Every request and answer of one driver session on the wire (made once per process)."""
    quiet = logging.getLogger("drivers.nexo")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the lost answer is on purpose
    try:
        with tempfile.TemporaryDirectory(prefix="fuzz-nexo-") as tmp:
            return tuple(asyncio.run(_session(encoding, sealed, Path(tmp))))
    finally:
        quiet.setLevel(level)


def _adyen_mocks() -> list[bytes]:
    return [p.read_bytes() for p in sorted(DATA.glob("adyen-*.json"))]


def _poi_posts() -> list[bytes]:
    """What a POI POSTs to the sale system: an event, a display and a print request."""

    def header(category: MessageCategory, cls: MessageClass, kind: MessageType) -> MessageHeader:
        return MessageHeader(cls, category, kind, SALE_ID, POI_ID, "3.1", "77")

    text = OutputContent.of_lines(("Insert card", "12.34 EUR"))
    messages = [
        nm.Message(
            header(MessageCategory.DISPLAY, MessageClass.DEVICE, MessageType.REQUEST),
            nm.DisplayRequest((nm.DisplayOutput(text, "CashierDisplay", "Status"),)),
        ),
        nm.Message(
            header(MessageCategory.PRINT, MessageClass.DEVICE, MessageType.REQUEST),
            nm.PrintRequest(nm.PrintOutput(text, "CustomerReceipt", "PrintEnd")),
        ),
        nm.Message(
            header(MessageCategory.EVENT, MessageClass.EVENT, MessageType.NOTIFICATION),
            nm.EventNotification("2026-01-01T00:00:00Z", "BeginMaintenance", "update"),
        ),
    ]
    return [codec_xml.encode(m) for m in messages]


def _sale_endpoint(data: bytes) -> None:
    answer_poi(Wire("xml").decode(data), sale_id=SALE_ID, poi_id=POI_ID)


def targets() -> list[Target]:
    return [
        Target("nexo.xml", Wire("xml").decode, ERRORS, lambda: list(wire_samples("xml"))),
        Target(
            "nexo.adyen_json",
            Wire("adyen-json").decode,
            ERRORS,
            lambda: [*wire_samples("adyen-json"), *_adyen_mocks()],
            structured=True,
        ),
        Target(
            "nexo.adyen_sealed",
            Wire("adyen-json", KEY).decode,
            ERRORS,
            lambda: list(wire_samples("adyen-json", sealed=True)),
            structured=True,
        ),
        Target("nexo.sale_endpoint", _sale_endpoint, ERRORS, _poi_posts),
    ]
