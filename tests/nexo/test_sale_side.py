"""nexo default mode: the POI POSTs to the sale system's endpoint over real loopback HTTP."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from drivers.nexo import codec_xml
from drivers.nexo import messages as nm
from drivers.nexo.asyncio.sale_endpoint import SaleEndpoint
from drivers.nexo.model import (
    MessageCategory,
    MessageClass,
    MessageHeader,
    MessageType,
    OutputContent,
)

EVENT = (
    b'<?xml version="1.0" encoding="UTF-8"?><SaleToPOIRequest>'
    b'<MessageHeader MessageClass="Event" MessageCategory="Event" MessageType="Notification" '
    b'DeviceID="1" SaleID="EVPAY-1" POIID="POI-1"/>'
    b'<EventNotification TimeStamp="2026-01-01T00:00:00Z" EventToNotify="BeginMaintenance">'
    b"<EventDetails>parameters update</EventDetails></EventNotification></SaleToPOIRequest>"
)


def _display(sale_id: str) -> bytes:
    header = MessageHeader(
        MessageClass.DEVICE,
        MessageCategory.DISPLAY,
        MessageType.REQUEST,
        sale_id,
        "POI-1",
        "3.1",
        "77",
    )
    out = nm.DisplayOutput(OutputContent.of_lines(("Insert card",)), "CashierDisplay", "Status")
    return codec_xml.encode(nm.Message(header, nm.DisplayRequest((out,))))


async def test_poi_posts_events_and_display_to_the_sale_system() -> None:
    endpoint = SaleEndpoint(sale_id="EVPAY-1", poi_id="POI-1", max_notices=2)
    runner = web.AppRunner(endpoint.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/EPASSaleToPOI/3.1"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=EVENT) as resp:
                assert resp.status == 204
            async with http.post(url, data=_display("EVPAY-1")) as resp:
                assert resp.status == 200
                reply = codec_xml.decode(await resp.read())
            assert isinstance(reply.body, nm.DisplayResponse)
            assert (
                reply.header.service_id == "77"
                and reply.header.message_type is MessageType.RESPONSE
            )
            async with http.post(url, data=_display("SOMEONE-ELSE")) as resp:
                assert resp.status == 400
            async with http.post(url, data=b"<nonsense/>") as resp:
                assert resp.status == 400
            async with http.post(url, data=EVENT) as resp:
                assert resp.status == 204
    finally:
        await runner.cleanup()
    kinds = [(n.kind, n.event, n.lines) for n in endpoint.notices]
    assert kinds == [
        ("display", None, ("Insert card",)),
        ("event", "BeginMaintenance", ("parameters update",)),
    ]
    assert endpoint.dropped == 1  # bounded: the first event made room
