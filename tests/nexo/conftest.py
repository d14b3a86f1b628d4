"""A nexo POI simulator on real loopback HTTP(S), and a driver pointed at it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drivers.base import TerminalResult
from drivers.nexo.adyen_crypto import AdyenKey
from drivers.nexo.asyncio.client import NexoOptions
from drivers.nexo.asyncio.terminal import NexoTerminal
from drivers.nexo.wire import PATHS, Encoding
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi

MakeRig = Callable[..., Awaitable["Rig"]]


def receipt(result: TerminalResult) -> str:
    """The hold's reference (the POI transaction) a result must carry to be settled later."""
    assert result.ref is not None, result
    return result.ref  # make_rig(encoding="xml", **PoiConfig fields)


KEY = AdyenKey("EvpayTestKey", 1, "test-passphrase-not-secret")


@dataclass
class Rig:
    poi: NexoPoi
    port: int
    encoding: Encoding
    fingerprint: bytes | None
    tmp: Path
    made: list[NexoTerminal] = field(default_factory=list)

    def terminal(self, **options: Any) -> NexoTerminal:
        scheme = "https" if self.fingerprint else "http"
        base = NexoOptions(
            url=f"{scheme}://127.0.0.1:{self.port}{PATHS[self.encoding]}",
            encoding=self.encoding,
            sale_id="EVPAY-1",
            poi_id=self.poi.config.poi_id,
            key=KEY if self.encoding == "adyen-json" else None,
            pinned_sha256=self.fingerprint,
            timeout_s=3.0,
            quick_timeout_s=3.0,
            retry_s=0.05,
            state_path=self.tmp / "nexo-state.json",
        )
        term = NexoTerminal("nexo-1", replace(base, **options))
        self.made.append(term)
        return term


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, bytes]:
    """A throw-away certificate for 127.0.0.1, made now (nothing committed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "V400m-324688179")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "poi.crt", tmp / "poi.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert.fingerprint(hashes.SHA256())


@pytest.fixture(params=["xml", "adyen-json"])
def encoding(request: pytest.FixtureRequest) -> Encoding:
    enc: Encoding = request.param
    return enc


@pytest.fixture
async def make_rig(
    tmp_path: Path,
) -> AsyncIterator[MakeRig]:
    runners = []
    rigs: list[Rig] = []

    async def make(encoding: Encoding = "xml", **config: Any) -> Rig:
        tls, fp = (None, None)
        if encoding == "adyen-json":
            tls, fp = self_signed(tmp_path)
            config.setdefault("key", KEY)
        poi = NexoPoi(PoiConfig(encoding=encoding, **config))
        runner, port = await serve_nexo_poi(poi, tls=tls)
        runners.append(runner)
        rig = Rig(poi, port, encoding, fp, tmp_path)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        for term in rig.made:
            await term.close()
    for runner in runners:
        await runner.cleanup()
