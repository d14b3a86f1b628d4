"""``SaleEndpoint``: the HTTP server the POI POSTs to in nexo's default (server and client)
mode, on the XML transport's path. Notices queue up to ``max_notices``; beyond that the oldest
is dropped and counted (``dropped``), so a chatty POI can never grow memory."""

from __future__ import annotations

import os
from collections import deque

from aiohttp import web

from drivers.nexo.errors import NexoFormatError, NexoSecurityError
from drivers.nexo.sale_side import PoiNotice, answer_poi
from drivers.nexo.wire import PATHS, Wire

MAX_NOTICES = 200


class SaleEndpoint:
    def __init__(self, *, sale_id: str, poi_id: str, max_notices: int = MAX_NOTICES) -> None:
        self.sale_id = sale_id
        self.poi_id = poi_id
        self.notices: deque[PoiNotice] = deque(maxlen=max_notices)
        self.dropped = 0
        self.wire = Wire("xml")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_post(PATHS["xml"], self._post)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        try:
            message = self.wire.decode(await request.read())
            reply, notice = answer_poi(message, sale_id=self.sale_id, poi_id=self.poi_id)
        except (NexoFormatError, NexoSecurityError) as exc:
            return web.Response(status=400, text=str(exc))
        if len(self.notices) == self.notices.maxlen:
            self.dropped += 1
        self.notices.append(notice)
        if reply is None:
            return web.Response(status=204)
        body = self.wire.encode(reply, os.urandom(16))
        return web.Response(body=body, content_type="application/xml", charset="utf-8")
