"""The embedded CPO as one aiohttp application: every route and the part that answers it."""

from __future__ import annotations

import ssl

from aiohttp import web

from gateway.ocpi.cpo_sim.charging import CpoCharging
from gateway.ocpi.cpo_sim.payments import CpoPayments
from gateway.ocpi.cpo_sim.registration import CpoRegistration
from gateway.ocpi.cpo_sim.state import VERSION


class CpoSimulator(CpoRegistration, CpoCharging, CpoPayments):
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._strict])
        r = app.router
        r.add_get("/ocpi/versions", self._versions)
        r.add_get(f"/ocpi/{VERSION}", self._details)
        r.add_post(f"/ocpi/{VERSION}/credentials", self._register)
        r.add_put(f"/ocpi/{VERSION}/credentials", self._rotate)
        r.add_delete(f"/ocpi/{VERSION}/credentials", self._unregister)
        pay = f"/ocpi/cpo/{VERSION}/payments"
        r.add_post(f"{pay}/financial-advice-confirmations", self._post_fac)
        r.add_post(f"{pay}/financial-advice-confirmations/", self._post_fac)
        r.add_get(f"{pay}/financial-advice-confirmations/{{id}}", self._get_fac)
        r.add_post(f"/ocpi/cpo/{VERSION}/commands/{{command}}", self._command)
        r.add_get(f"/ocpi/cpo/{VERSION}/tariffs", self._list_tariffs)
        r.add_get(f"/ocpi/cpo/{VERSION}/locations", self._list_locations)
        r.add_post(f"{pay}/terminals", self._post_terminal)
        r.add_post(f"{pay}/terminals/", self._post_terminal)
        r.add_get(f"{pay}/terminals/{{id}}", self._get_terminal)
        r.add_put(f"{pay}/terminals/{{id}}", self._put_terminal)
        r.add_put(f"/ocpi/cpo/{VERSION}/DEEVPfiscal/{{reference}}", self._put_receipt)
        r.add_put(f"/ocpi/cpo/{VERSION}/DEEVPrecon/{{what}}/{{id}}", self._put_recon)
        return app

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"{'https' if tls else 'http'}://{host}:{bound}"
        return self.base
