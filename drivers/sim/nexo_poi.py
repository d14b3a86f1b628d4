"""A nexo POI on loopback HTTP: ``serve_nexo_poi`` puts the POI's brain (``NexoPoi``,
``drivers/sim/nexo_poi_brain.py``: its answers, ledger and variants) behind aiohttp at the
encoding's path (``/EPASSaleToPOI/3.1`` XML, ``/nexo`` Adyen JSON, HTTPS when given a TLS
context). The variants that live on the wire are played here: ``drop_requests`` and
``lose_answers`` cut the connection, ``tap_required`` waits for a card, ``delay_s`` answers late.
"""

from __future__ import annotations

import asyncio
import os
import ssl

from aiohttp import web

from drivers.nexo import messages as nm
from drivers.nexo.errors import NexoFormatError, NexoSecurityError
from drivers.nexo.wire import PATHS, Wire
from drivers.sim.nexo_poi_brain import MAX_LEDGER, NexoPoi, PoiConfig, Txn, needs_card

__all__ = ["MAX_LEDGER", "NexoPoi", "PoiConfig", "Txn", "make_app", "serve_nexo_poi"]

# ---- HTTP ---------------------------------------------------------------------------------------


def make_app(poi: NexoPoi) -> web.Application:
    wire = Wire(poi.config.encoding, poi.config.key)

    async def endpoint(request: web.Request) -> web.StreamResponse:
        data = await request.read()
        if len(poi.raw) < MAX_LEDGER:
            poi.raw.append(data)
        try:
            message = wire.decode(data)
        except (NexoFormatError, NexoSecurityError) as exc:
            return web.Response(status=400, text=str(exc))
        if message.header.poi_id != poi.config.poi_id:
            return web.Response(status=400, text=f"POIID {message.header.poi_id} is not this POI")
        money = isinstance(message.body, (nm.PaymentRequest, nm.ReversalRequest))
        if money and poi.config.drop_requests > 0:
            poi.config.drop_requests -= 1
            if request.transport is not None:
                request.transport.abort()  # cut before the POI acted: nothing happened
            raise web.HTTPServiceUnavailable
        card = isinstance(message.body, nm.CardAcquisitionRequest) or needs_card(message.body)
        if card and poi.config.tap_required:
            end = asyncio.get_running_loop().time() + poi.config.card_wait_s
            while poi.taps == 0 and poi.aborts == 0:  # a driver taps, or the sale system aborts
                if asyncio.get_running_loop().time() >= end:
                    break
                await asyncio.sleep(0.02)
        reply = poi.handle(message)
        if poi.config.delay_s:
            await asyncio.sleep(poi.config.delay_s)
        if money and poi.config.lose_answers > 0:
            poi.config.lose_answers -= 1
            if request.transport is not None:
                request.transport.abort()  # the POI acted; its answer never arrives
            raise web.HTTPServiceUnavailable
        if reply is None:
            return web.Response(status=204)
        body = wire.encode(reply, os.urandom(16))
        if len(poi.sent) < MAX_LEDGER:
            poi.sent.append(body)
        return web.Response(body=body, content_type=wire.content_type.split(";")[0])

    app = web.Application(client_max_size=256 * 1024)
    app.router.add_post(PATHS[poi.config.encoding], endpoint)
    return app


async def serve_nexo_poi(
    poi: NexoPoi, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Start the POI; returns the runner (``await runner.cleanup()`` stops it) and the port."""
    runner = web.AppRunner(make_app(poi), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
