"""The credentials module and the versions it is found by: registration (token A for token C,
with a strict CPO's call back first), rotation, unregistration, and a registration it starts."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from gateway.ocpi.cpo_sim.state import VERSION
from gateway.ocpi.cpo_sim.strict import CpoBase, _auth
from gateway.ocpi.models import Credentials, envelope


class CpoRegistration(CpoBase):
    async def _versions(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return self._unauthorized()
        return web.json_response(
            envelope([{"version": VERSION, "url": f"{self.base}/ocpi/{VERSION}"}])
        )

    async def _details(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return self._unauthorized()
        base = self._endpoint_base()
        endpoints = [
            {
                "identifier": "credentials",
                "role": "RECEIVER",
                "url": f"{base}/ocpi/{VERSION}/credentials",
            },
            {
                "identifier": "payments",
                "role": "RECEIVER",
                "url": f"{base}/ocpi/cpo/{VERSION}/payments",
            },
            {
                "identifier": "commands",
                "role": "RECEIVER",
                "url": f"{base}/ocpi/cpo/{VERSION}/commands",
            },
            {
                "identifier": "tariffs",
                "role": "SENDER",
                "url": f"{base}/ocpi/cpo/{VERSION}/tariffs",
            },
            {
                "identifier": "locations",
                "role": "SENDER",
                "url": f"{base}/ocpi/cpo/{VERSION}/locations",
            },
        ]
        if "no_custom_modules" not in self.state.quirks:
            endpoints.append(
                {
                    "identifier": "DEEVPrecon",
                    "role": "RECEIVER",
                    "url": f"{base}/ocpi/cpo/{VERSION}/DEEVPrecon",
                }
            )
        if (
            "no_fiscal_module" not in self.state.quirks
            and "no_custom_modules" not in self.state.quirks
        ):
            endpoints.append(
                {
                    "identifier": "DEEVPfiscal",
                    "role": "RECEIVER",
                    "url": f"{base}/ocpi/cpo/{VERSION}/DEEVPfiscal",
                }
            )
        return web.json_response(envelope({"version": VERSION, "endpoints": endpoints}))

    async def _register(self, request: web.Request, *, rotating: bool = False) -> web.Response:
        if not rotating and not self._allowed(request, registration=True):
            return self._unauthorized()
        try:
            creds = await self._object(request, Credentials)
        except (ValidationError, ValueError) as exc:
            return self._refuse(f"invalid credentials: {exc}")
        if "require_website" in self.state.quirks and not any(
            r.business_details.website for r in creds.roles
        ):
            return self._refuse("business_details.website is required by this CPO")
        if self.state.callback:
            problem = await self._call_back(creds, request.headers.get("X-Correlation-ID", ""))
            if problem:
                return self._refuse(
                    f"unable to use the client's API: {problem}", status=200, code=3001
                )
        self.state.registered.append(creds.to_json())
        self.state.ptp_token, self.state.ptp_versions_url = creds.token, creds.url
        token_c = secrets.token_hex(16)
        self.state.tokens.add(token_c)
        role = {
            "role": "CPO",
            "party_id": "CPO",
            "country_code": "DE",
            "business_details": {"name": "Embedded CPO"},
        }
        reply = {"token": token_c, "url": self.versions_url, "roles": [role]}
        return web.json_response(envelope(reply))

    async def _call_back(self, creds: Credentials, correlation_id: str) -> str | None:
        """What a strict CPO does before answering a registration: GET the PTP's versions and its
        2.3.0 details with the token B it was just given; the ids must come back echoed."""
        try:
            async with aiohttp.ClientSession(headers=_auth(creds.token)) as http:
                versions = await self._get_checked(http, creds.url, correlation_id)
                chosen = next((v for v in versions if v.get("version") == VERSION), None)
                if chosen is None:
                    return f"no OCPI {VERSION} at {creds.url}"
                await self._get_checked(http, chosen["url"], correlation_id)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
            self.state.callbacks.append(f"failed: {exc}")
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _get_checked(self, http: aiohttp.ClientSession, url: str, correlation_id: str) -> Any:
        ids = {
            "X-Request-ID": secrets.token_hex(8),
            "X-Correlation-ID": correlation_id or secrets.token_hex(8),
        }
        async with http.get(url, headers=ids, timeout=aiohttp.ClientTimeout(total=5)) as r:
            body = await r.json()
            if r.status != 200 or body.get("status_code") != 1000:
                raise ValueError(f"GET {url}: HTTP {r.status}, OCPI {body.get('status_code')}")
            echoed = {k: r.headers.get(k) for k in ids}
            if echoed != ids:
                raise ValueError(f"GET {url}: message ids not echoed ({echoed})")
        self.state.callbacks.append(url)
        return body["data"]

    async def register_with(self, ptp_versions_url: str, token_a: str) -> dict[str, Any]:
        """CPO-initiated registration: with the token A the PTP gave us, discover its credentials
        endpoint and POST ours; its answer carries the token B we use to call it."""
        correlation = secrets.token_hex(8)
        async with aiohttp.ClientSession(headers=_auth(token_a)) as http:
            versions = await self._get_checked(http, ptp_versions_url, correlation)
            details = await self._get_checked(http, versions[0]["url"], correlation)
            url = next(e["url"] for e in details["endpoints"] if e["identifier"] == "credentials")
            token_c = secrets.token_hex(16)
            self.state.tokens.add(token_c)
            ours = {
                "token": token_c,
                "url": self.versions_url,
                "roles": [
                    {
                        "role": "CPO",
                        "party_id": "CPO",
                        "country_code": "DE",
                        "business_details": {"name": "Embedded CPO"},
                    }
                ],
            }
            ids = {"X-Request-ID": secrets.token_hex(8), "X-Correlation-ID": correlation}
            async with http.post(url, json=ours, headers=ids) as r:
                body = await r.json()
        if body.get("status_code") != 1000:
            raise ValueError(f"the PTP refused our registration: {body}")
        creds = Credentials.model_validate(body["data"])
        self.state.registered.append(creds.to_json())
        self.state.ptp_token, self.state.ptp_versions_url = creds.token, creds.url
        return dict(body["data"])

    async def _rotate(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token not in self.state.tokens:
            return web.json_response(
                envelope(status_code=2000, message="not registered"), status=405
            )
        self.state.tokens.discard(token)
        return await self._register(request, rotating=True)

    async def _unregister(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token not in self.state.tokens:
            return web.json_response(
                envelope(status_code=2000, message="not registered"), status=405
            )
        self.state.tokens.discard(token)
        return web.json_response(envelope())
