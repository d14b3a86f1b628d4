"""Attacks on the OCPI server's input (issue 27) over real loopback HTTP (the fixture of
tests/ocpi/test_ptp_server.py)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from gateway.store import Store
from tests.ocpi.test_ptp_server import _auth, _cdr, _post_cdr

Server = tuple[str, Store, aiohttp.ClientSession]


@pytest.mark.parametrize(
    "raw",
    [
        b'"total_energy": 1e400',
        b'"total_energy": -1e400',
        b'"total_energy": 1E+12',
        b'"total_energy": 999999999999.9999',
        b'"total_energy": NaN',
        b'"total_energy": Infinity',
        b'"total_energy": -0',
        b'"total_energy": 1e-400',
        b'"total_energy": 0.' + b"0" * 4000 + b"1",
        b'"total_energy": 1' + b"0" * 4400,
        b'"total_energy": "7.0"',
        b'"total_energy": true',
    ],
)
async def test_hostile_numbers_in_a_cdr_are_a_400_never_a_500_nor_inf(
    server: Server,
    raw: bytes,
) -> None:
    base, store, http = server
    body = json.dumps(_cdr("N1")).encode().replace(b'"total_energy": 7.0', raw)
    status, answer = await _post_cdr(base, http, body, "r-num")
    assert status in (201, 400), (status, answer)
    for message in store.inbox("cdr"):
        json.loads(json.dumps(message["payload"], allow_nan=False))


async def test_deep_json_in_a_session_patch_is_a_400(server: Server) -> None:
    base, _, http = server
    deep = b'{"x": ' + b"[" * 17 + b"]" * 17 + b"}"
    headers = {**_auth(), "Content-Type": "application/json"}
    for method, path in (
        ("PATCH", "/ocpi/ptp/2.3.0/sessions/DE/CPO/S1"),
        ("PUT", "/ocpi/ptp/2.3.0/sessions/DE/CPO/S1"),
        ("POST", "/ocpi/ptp/2.3.0/commands/START_SESSION/u1"),
        ("POST", "/ocpi/ptp/2.3.0/cdrs"),
    ):
        async with http.request(method, base + path, data=deep, headers=headers) as r:
            assert r.status in (400, 404), (method, path, r.status)


async def test_two_command_results_under_one_request_id_are_both_kept(
    server: Server,
) -> None:
    base, store, http = server
    headers = {**_auth(), "Content-Type": "application/json", "X-Request-ID": "same"}
    for uid, result in (("u1", "ACCEPTED"), ("u2", "REJECTED")):
        async with http.post(
            f"{base}/ocpi/ptp/2.3.0/commands/START_SESSION/{uid}",
            data=json.dumps({"result": result}).encode(),
            headers=headers,
        ) as r:
            assert r.status == 200, await r.text()
    kept = sorted(str(m["payload"]["uid"]) for m in store.inbox("command_result"))
    assert kept == ["u1", "u2"], kept


async def test_fiscal_data_for_two_sessions_under_one_request_id_are_both_kept(
    server: Server,
) -> None:
    from gateway.ocpi.server import FISCAL_MODULE

    base, store, http = server
    headers = {**_auth(), "Content-Type": "application/json", "X-Request-ID": "same"}
    for sid in ("s0", "s1"):
        async with http.put(
            f"{base}/ocpi/ptp/2.3.0/{FISCAL_MODULE}/EVP-{sid}",
            data=json.dumps({"lines": [f"receipt of {sid}"]}).encode(),
            headers=headers,
        ) as r:
            assert r.status == 200, await r.text()
    kept = sorted(str(m["payload"]["authorization_reference"]) for m in store.inbox("fiscal"))
    assert kept == ["EVP-s0", "EVP-s1"], kept
