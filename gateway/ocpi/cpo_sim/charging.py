"""The CPO runs the charger: StartSession and StopSession commands, a simulated charge pushed to
the PTP as Session updates and a CDR, and the tariffs and locations it publishes."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from gateway.ocpi.cpo_sim.strict import CpoBase, _auth, _ts, _with_ids
from gateway.ocpi.models import StartSession, StopSession, envelope


class CpoCharging(CpoBase):
    async def _command(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return self._unauthorized()
        command = request.match_info["command"]
        self.state.commands.append(command)
        try:
            if command == "START_SESSION":
                start = await self._object(request, StartSession)
                self._tasks.add(asyncio.create_task(self._run_session(start)))
            elif command == "STOP_SESSION":
                self.state.stop_requested.add((await self._object(request, StopSession)).session_id)
            else:
                return web.json_response(envelope({"result": "NOT_SUPPORTED", "timeout": 0}))
        except (ValidationError, ValueError) as exc:
            return self._refuse(f"invalid command: {exc}")
        return web.json_response(envelope({"result": "ACCEPTED", "timeout": 30}))

    async def _run_session(self, start: StartSession) -> None:
        """Charge, pushing Session updates to the PTP, then send the CDR and the CommandResult."""
        headers = _auth(self.state.ptp_token or "")
        async with aiohttp.ClientSession(headers=headers, trace_configs=[_with_ids()]) as http:
            endpoints = await self._ptp_endpoints(http, self.state.ptp_versions_url or "")
            sid = f"CPO-{secrets.token_hex(6)}"
            now = datetime.now(UTC)
            session = {
                "country_code": "DE",
                "party_id": "CPO",
                "id": sid,
                "start_date_time": _ts(now),
                "kwh": 0,
                "authorization_reference": start.authorization_reference,
                "location_id": start.location_id,
                "evse_uid": start.evse_uid or "EVSE",
                "currency": "EUR",
                "status": "ACTIVE",
                "last_updated": _ts(now),
            }
            url = f"{endpoints['sessions']}/DE/CPO/{sid}"
            await http.put(url, json=session)
            await http.post(start.response_url, json={"result": "ACCEPTED"})
            kwh = Decimal(0)
            while kwh < self.state.session_kwh and sid not in self.state.stop_requested:
                await asyncio.sleep(self.state.push_interval_s)
                kwh = min(kwh + self.state.kwh_step, self.state.session_kwh)
                await http.patch(
                    url, json={"kwh": float(kwh), "last_updated": _ts(datetime.now(UTC))}
                )
            end = datetime.now(UTC)
            await http.patch(
                url,
                json={"status": "COMPLETED", "end_date_time": _ts(end), "last_updated": _ts(end)},
            )
            cost = (kwh * self.state.price_per_kwh).quantize(Decimal("0.01"))
            cdr = {
                "country_code": "DE",
                "party_id": "CPO",
                "id": f"CDR-{sid}",
                "start_date_time": session["start_date_time"],
                "end_date_time": _ts(end),
                "session_id": sid,
                "authorization_reference": start.authorization_reference,
                "currency": "EUR",
                "total_cost": {"before_taxes": float(cost)},
                "total_energy": float(kwh),
                "invoice_reference_id": f"INV-{sid}",
                "last_updated": _ts(end),
            }
            self.state.cdrs.append(cdr)
            await http.post(endpoints["cdrs"], json=cdr)
            if self.state.fiscal_lines and "DEEVPfiscal" in endpoints:
                fiscal = {
                    "lines": [*self.state.fiscal_lines, f"Invoice {cdr['invoice_reference_id']}"],
                    "invoice_reference_id": cdr["invoice_reference_id"],
                }
                await http.put(
                    f"{endpoints['DEEVPfiscal']}/{start.authorization_reference}", json=fiscal
                )

    async def _list_tariffs(self, request: web.Request) -> web.Response:
        return self._list(request, self.state.tariffs)

    async def _list_locations(self, request: web.Request) -> web.Response:
        return self._list(request, self.state.locations)
