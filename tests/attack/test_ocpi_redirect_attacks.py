"""Attacks on the OCPI client's redirect handling (issue 27): a hostile CPO answers with
redirects of every shape; our token must reach no origin but the CPO's (real loopback servers,
IPv4 and IPv6)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.errors import OcpiRejected
from gateway.ocpi.client import OcpiClient, Trust
from tests.helpers import free_port

TOKEN = "secret-token-c"


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class Thief:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((str(request.url), request.headers.get("Authorization")))
        return web.json_response({"status_code": 1000, "data": {}})


@pytest.fixture
async def servers() -> AsyncIterator[tuple[int, int, int | None, Thief, dict[str, str]]]:
    thief = Thief()
    redirect: dict[str, str] = {}
    runners = []

    async def cpo(request: web.Request) -> web.Response:
        if request.path.startswith("/ok"):
            return web.json_response({"status_code": 1000, "data": {"ok": True}})
        location = redirect["to"]
        return web.Response(
            status=int(redirect.get("status", "307")), headers={"Location": location}
        )

    async def serve(handler, host: str) -> int:  # type: ignore[no-untyped-def]
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
        return port

    cpo_port = await serve(cpo, "127.0.0.1")
    thief_port = await serve(thief.handle, "127.0.0.1")
    v6 = await serve(thief.handle, "::1") if _ipv6() else None
    yield cpo_port, thief_port, v6, thief, redirect
    for r in runners:
        await r.cleanup()


def _locations(cpo: int, thief: int, v6: int | None) -> list[str]:
    out = [
        f"//127.0.0.1:{thief}/x",  # scheme-relative
        f"http://127.0.0.1:{thief}/x",
        f"http://localhost:{thief}/x",
        f"http://127.0.0.1:{cpo}@127.0.0.1:{thief}/x",  # userinfo that looks like the CPO
        f"http://127.0.0.1:{thief}#@127.0.0.1:{cpo}/x",
        f"http://127.0.0.1:{thief}\\@127.0.0.1:{cpo}/x",
        f"HTTP://127.0.0.1:{thief}/x",
        f"http://2130706433:{thief}/x",  # 127.0.0.1 as an integer
        f"http://0x7f.1:{thief}/x",
        f"http://127.1:{thief}/x",
        f"http:127.0.0.1:{thief}/x",
        f"/\\127.0.0.1:{thief}/x",
        "/loop",  # a redirect loop on the CPO itself
    ]
    if v6 is not None:
        out += [f"http://[::1]:{v6}/x", f"http://[0:0:0:0:0:0:0:1]:{v6}/x"]
        out += [f"http://[::ffff:127.0.0.1]:{thief}/x"]
    return out


@pytest.mark.parametrize("status", ["301", "302", "303", "307", "308"])
async def test_no_redirect_shape_takes_our_token_elsewhere(
    servers: tuple[int, int, int | None, Thief, dict[str, str]], status: str
) -> None:
    cpo, thief_port, v6, thief, redirect = servers
    redirect["status"] = status
    url = f"http://127.0.0.1:{cpo}/ocpi/versions"
    async with aiohttp.ClientSession() as http:
        for trust in (Trust([f"http://127.0.0.1:{cpo}"], allow_http=True), None):
            client = OcpiClient(http, TOKEN, timeout_s=3, trust=trust)
            for location in _locations(cpo, thief_port, v6):
                redirect["to"] = location
                for method in ("GET", "POST"):
                    with contextlib.suppress(OcpiRejected, Exception):  # refusal is the point
                        await client.request(method, url, {"x": 1} if method == "POST" else None)
    assert thief.seen == [], thief.seen


async def test_a_relative_redirect_on_the_cpo_is_followed(
    servers: tuple[int, int, int | None, Thief, dict[str, str]],
) -> None:
    cpo, _, _, thief, redirect = servers
    redirect["to"] = "/ok/there"
    async with aiohttp.ClientSession() as http:
        trust = Trust([f"http://127.0.0.1:{cpo}"], allow_http=True)
        reply = await OcpiClient(http, TOKEN, timeout_s=3, trust=trust).request(
            "GET", f"http://127.0.0.1:{cpo}/ocpi/versions"
        )
    assert reply.data == {"ok": True} and thief.seen == []


def test_a_downgrade_to_http_on_the_same_host_is_refused() -> None:
    trust = Trust(["https://cpo.example"], allow_http=False)
    for url in (
        "http://cpo.example/x",
        "http://cpo.example:443/x",
        "https://cpo.example:8443/x",
        "https://cpo.example.:443/x",
        "https://CPO.example@evil.example/x",
    ):
        with pytest.raises(OcpiRejected):
            trust.check(url)
    trust.check("https://CPO.EXAMPLE/ocpi")  # case of the host is not a new origin


async def test_control_the_thief_is_reachable_by_a_naive_client(
    servers: tuple[int, int, int | None, Thief, dict[str, str]],
) -> None:
    """The rig can see a leak: aiohttp's own redirect following takes the token to the thief."""
    cpo, thief_port, _, thief, redirect = servers
    redirect["to"] = f"http://127.0.0.1:{thief_port}/x"
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{cpo}/ocpi/versions", headers={"Authorization": "Token x"}
        ) as r,
    ):
        assert r.status == 200
    assert thief.seen  # (aiohttp itself drops Authorization across origins)
