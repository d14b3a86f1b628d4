"""Where our OCPI tokens may go: https only (plain http is a loud lab setting), only to the
CPO's origin or an allow-list, over a certificate that chains to the configured CA or matches
the pin; and our own OCPI server with its certificate. Real TLS on loopback, keys made here."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from gateway.errors import ConfigError, OcpiRejected, UpstreamError
from gateway.ocpi.client import OcpiClient, Trust
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.ocpi.worker import UpstreamWorker
from gateway.settings import SecretRef, UpstreamSettings, parse_settings
from gateway.store import Store
from tests.helpers import free_port


def make_cert(directory: Path) -> tuple[Path, Path, bytes]:
    """A self-signed certificate for 127.0.0.1: (cert file, key file, DER bytes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path, bytes]:
    return make_cert(tmp_path)


def test_plain_http_upstream_is_refused_without_the_lab_setting() -> None:
    base = '[site]\nid = "S"\ncountry = "DE"\n[upstream]\nenabled = true\ntoken_a = { value = "a" }\nkey = { value = "k" }\n'
    with pytest.raises(ConfigError, match="versions_url must be https"):
        parse_settings(base + 'versions_url = "http://cpo.example/ocpi/versions"\n', "<t>")
    lab = parse_settings(
        base + 'versions_url = "http://cpo.example/v"\nallow_insecure_http = true\n'
        'public_url = "http://gw/ocpi/versions"\n',
        "<t>",
    )
    assert lab.upstream.allow_insecure_http


async def test_the_token_never_goes_to_another_origin() -> None:
    trust = Trust(["https://cpo.example.com/ocpi/versions", "partner.example.net"])
    async with aiohttp.ClientSession() as http:
        client = OcpiClient(http, "secret-token", trust=trust)
        with pytest.raises(
            OcpiRejected, match=r"refusing to send our token to https://evil\.example"
        ):
            await client.request("GET", "https://evil.example/ocpi/2.3.0")
        with pytest.raises(OcpiRejected, match="only over https"):
            await client.request("GET", "http://cpo.example.com/ocpi/2.3.0")
    trust.check("https://partner.example.net/x")  # the allow-list, by host name
    trust.check("https://CPO.example.com/ocpi/2.3.0/payments")


async def test_a_cpo_that_publishes_endpoints_on_another_host_is_refused(tmp_path: Path) -> None:
    cpo = CpoSimulator()
    cpo.state.quirks.add("foreign_endpoints")
    await cpo.start()
    port = free_port()
    settings = UpstreamSettings(
        enabled=True,
        versions_url=cpo.versions_url,
        allow_insecure_http=True,
        listen=f"127.0.0.1:{port}",
        public_url=f"http://127.0.0.1:{port}/ocpi/versions",
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(Fernet.generate_key().decode())),
    )
    store = Store.open(tmp_path / "f.sqlite3")
    try:
        worker = UpstreamWorker(settings, "DE", store, lambda: dt.datetime.now(dt.UTC))
        with pytest.raises(
            UpstreamError, match=r"refusing to send our token to http://127\.0\.0\.2"
        ):
            await worker.run(asyncio.Event())
        assert cpo.state.registered == []
        status = store.upstream_status()
        assert status is not None and "127.0.0.2" in status["reason"]
    finally:
        store.close()
        await cpo.stop()


@pytest.mark.parametrize("mode", ["ca_file", "pin", "wrong-pin", "no-ca"])
async def test_the_cpos_certificate_must_chain_to_the_ca_or_match_the_pin(
    tmp_path: Path, cert: tuple[Path, Path, bytes], mode: str
) -> None:
    cert_path, key_path, der = cert
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(cert_path), str(key_path))
    cpo = CpoSimulator()
    cpo.state.callback = False  # this test is about our client side
    await cpo.start(tls=tls)
    assert cpo.versions_url.startswith("https://")
    pin = (
        hashlib.sha256(der).hexdigest()
        if mode == "pin"
        else ("00" * 32 if mode == "wrong-pin" else None)
    )
    settings = UpstreamSettings(
        enabled=True,
        versions_url=cpo.versions_url,
        public_url="https://gw.example/ocpi/versions",
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(Fernet.generate_key().decode())),
        ca_file=cert_path if mode == "ca_file" else None,
        pin_sha256=pin,
    )
    store = Store.open(tmp_path / f"{mode}.sqlite3")
    worker = UpstreamWorker(settings, "DE", store, lambda: dt.datetime.now(dt.UTC))
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        if mode in ("ca_file", "pin"):
            async with asyncio.timeout(10):
                while worker.pusher is None:
                    await asyncio.sleep(0.02)
            assert len(cpo.state.registered) == 1
        else:
            with pytest.raises(UpstreamError):
                await task
            assert cpo.state.registered == []
    finally:
        stopping.set()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
        await cpo.stop()


async def test_our_ocpi_server_serves_its_own_certificate(
    tmp_path: Path, cert: tuple[Path, Path, bytes]
) -> None:
    cert_path, key_path, _ = cert
    cpo = CpoSimulator()
    cpo.state.callback = False
    await cpo.start()
    port = free_port()
    settings = UpstreamSettings(
        enabled=True,
        versions_url=cpo.versions_url,
        allow_insecure_http=True,
        listen=f"127.0.0.1:{port}",
        public_url=f"https://127.0.0.1:{port}/ocpi/versions",
        token_a=SecretRef(value=SecretStr(cpo.state.token_a)),
        key=SecretRef(value=SecretStr(Fernet.generate_key().decode())),
        tls_cert=cert_path,
        tls_key=SecretRef(file=key_path),
    )
    store = Store.open(tmp_path / "s.sqlite3")
    worker = UpstreamWorker(settings, "DE", store, lambda: dt.datetime.now(dt.UTC))
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        async with asyncio.timeout(10):
            while worker.pusher is None:
                await asyncio.sleep(0.02)
        trusted = ssl.create_default_context(cafile=str(cert_path))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{port}/ocpi/versions", ssl=trusted) as r:
                assert r.status == 401  # TLS works; the token is still required
            with pytest.raises(aiohttp.ClientError):
                await http.get(
                    f"http://127.0.0.1:{port}/ocpi/versions"
                )  # no plain http on that port
    finally:
        stopping.set()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
        await cpo.stop()


async def test_a_redirect_to_another_origin_never_gets_our_token() -> None:
    """Issue 27: a 307 from the CPO's URL sent our credentials to another origin over http."""
    from aiohttp import web

    seen: list[str | None] = []

    async def thief(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"status_code": 1000, "data": {}})

    thief_app = web.Application()
    thief_app.router.add_route("*", "/{tail:.*}", thief)
    thief_runner = web.AppRunner(thief_app)
    await thief_runner.setup()
    thief_port = free_port()
    await web.TCPSite(thief_runner, "127.0.0.1", thief_port).start()

    async def cpo(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{thief_port}{request.path}")

    cpo_app = web.Application()
    cpo_app.router.add_route("*", "/{tail:.*}", cpo)
    cpo_runner = web.AppRunner(cpo_app)
    await cpo_runner.setup()
    cpo_port = free_port()
    await web.TCPSite(cpo_runner, "127.0.0.1", cpo_port).start()
    url = f"http://127.0.0.1:{cpo_port}/ocpi/versions"
    try:
        async with aiohttp.ClientSession() as http:
            trust = Trust([f"http://127.0.0.1:{cpo_port}"], allow_http=True)
            for client in (OcpiClient(http, "secret-token-c", trust=trust), OcpiClient(http, "t")):
                for method in ("GET", "POST"):
                    with pytest.raises(OcpiRejected, match="refusing"):
                        await client.request(method, url, {"x": 1} if method == "POST" else None)
    finally:
        await cpo_runner.cleanup()
        await thief_runner.cleanup()
    assert seen == []  # the other origin was never called, with or without the token
