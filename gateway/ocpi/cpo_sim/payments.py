"""The payments receiver (Financial Advice Confirmations, Terminals) and the custom modules
(DEEVPfiscal receipts, DEEVPrecon refunds and reports); the invoicing system's fiscal answer."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from gateway.ocpi.cpo_sim.strict import CpoBase, _auth, _with_ids
from gateway.ocpi.models import FinancialAdviceConfirmation, Terminal, envelope


class CpoPayments(CpoBase):
    async def _post_fac(self, request: web.Request) -> web.Response:
        known = set(self.state.facs)
        response = await self._post(
            request, FinancialAdviceConfirmation, self.state.facs, "id", self.state.fac_posts
        )
        new = [fac for fid, fac in self.state.facs.items() if fid not in known]
        if self.state.fiscal_on_fac and new and new[0]["capture_status_code"] != "FAILED":
            task = asyncio.create_task(self._send_fiscal(new[0]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return response

    async def _send_fiscal(self, fac: dict[str, Any]) -> None:
        """The invoicing system signs the receipt for the captured amount and sends it to the
        PTP."""
        await asyncio.sleep(self.state.fiscal_delay_s)
        reference = fac["authorization_reference"]
        number = len(self.state.fiscal_sent) + 1
        body: dict[str, Any] = {
            "invoice_reference_id": f"{number}/EVP1/1",
            "invoice_url": f"{self.base}/invoices/{reference}",
        }
        if self.state.fiscal_on_fac in ("signed", "zki_only"):
            issued = datetime.now(UTC).replace(second=0, microsecond=0)
            zki = hashlib.md5(f"{reference}{number}".encode()).hexdigest()  # noqa: S324 - the ZKI is an MD5 by law
            fields = {"zki": zki, "issued_at": issued.isoformat()}
            if self.state.fiscal_on_fac == "signed":
                fields["jir"] = str(uuid.uuid5(uuid.NAMESPACE_URL, reference))
            body["fields"] = fields
        headers = _auth(self.state.ptp_token or "")
        async with aiohttp.ClientSession(headers=headers, trace_configs=[_with_ids()]) as http:
            endpoints = await self._ptp_endpoints(http, self.state.ptp_versions_url or "")
            async with http.put(f"{endpoints['DEEVPfiscal']}/{reference}", json=body) as r:
                body["answer"] = r.status
        self.state.fiscal_sent.append(body)

    async def _put_recon(self, request: web.Request) -> web.Response:
        """Refunds and reconciliation reports (our side of the custom module DEEVPrecon)."""
        if not self._allowed(request):
            return self._unauthorized()
        what, ident = request.match_info["what"], request.match_info["id"]
        try:
            body = await request.json()
        except ValueError:
            return self._refuse("DEEVPrecon: not JSON")
        if (
            what == "refunds"
            and isinstance(body, dict)
            and isinstance(body.get("amount_minor"), int)
        ):
            self.state.refunds.setdefault(ident, []).append(body)
        elif (
            what == "reports" and isinstance(body, dict) and isinstance(body.get("findings"), list)
        ):
            self.state.reports[ident] = body
        else:
            return self._refuse(f"DEEVPrecon: not a valid {what} object")
        return web.json_response(envelope())

    async def _put_receipt(self, request: web.Request) -> web.Response:
        """What the driver's receipt said (our side of the custom module DEEVPfiscal)."""
        if not self._allowed(request):
            return self._unauthorized()
        try:
            body = await request.json()
        except ValueError:
            return self._refuse("receipt: not JSON")
        if not isinstance(body, dict) or body.get("state") not in (
            "complete",
            "pending",
            "delivered_late",
        ):
            return self._refuse("receipt: state must be complete, pending or delivered_late")
        self.state.receipts.setdefault(request.match_info["reference"], []).append(body)
        return web.json_response(envelope())

    async def _get_fac(self, request: web.Request) -> web.Response:
        return self._get(request, self.state.facs)

    async def _post_terminal(self, request: web.Request) -> web.Response:
        if "put_terminals" in self.state.quirks:
            return self._refuse(
                "this CPO takes Terminals by PUT {terminals}/{terminal_id}", status=405, code=2000
            )
        return await self._post(request, Terminal, self.state.terminals, "terminal_id", None)

    async def _put_terminal(self, request: web.Request) -> web.Response:
        if "put_terminals" not in self.state.quirks:
            return self._refuse(
                "PUT is not the Terminals receiver method here; POST the Terminal", 405, 2000
            )
        response = await self._post(request, Terminal, self.state.terminals, "terminal_id", None)
        stored = self.state.terminals.get(request.match_info["id"])
        if response.status in (200, 201) and stored is None:
            return self._refuse("terminal_id in the body differs from the URL")
        return response

    async def _get_terminal(self, request: web.Request) -> web.Response:
        return self._get(request, self.state.terminals)
