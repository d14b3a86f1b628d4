"""Sites for tests. ``site_toml`` and its parts (``tariff_toml``, ``upstream_toml``,
``nexo_keys``, ``route_site``, ``write_config``) render a site's config from keyword arguments
with the defaults the tests share, so that no test writes site TOML by hand (the settings tests
excepted: the text is what they test). ``start_site`` runs a whole site for end-to-end tests:
the real daemon, the simulator terminal on a real pty, the in-process charger (whose meter can
sign) and the embedded CPO over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.nexo.adyen_crypto import AdyenKey
from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.ocpi.cpo_sim import CpoSimulator
from gateway.runtime.app import Daemon
from gateway.runtime.charger import SimulatedCharger
from gateway.settings import parse_settings
from tests.helpers import free_port

METER = ec.generate_private_key(ec.SECP256R1())
METER_KEY = (
    METER.public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    .hex()
)


def upstream_toml(cpo: CpoSimulator, listen: int | None = None) -> str:
    """The ``[upstream]`` section that registers with the embedded CPO over loopback HTTP (its
    token A, a fresh Fernet key), our own OCPI server on ``listen`` (a free port by default)."""
    port = listen if listen is not None else free_port()
    return f"""[upstream]
enabled = true
allow_insecure_http = true
versions_url = "{cpo.versions_url}"
token_a = {{ value = "{cpo.state.token_a}" }}
key = {{ value = "{Fernet.generate_key().decode()}" }}
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/ocpi/versions"
"""


def tariff_toml(
    tariff_id: str = "T",
    *,
    currency: str = "EUR",
    price: str = "0.50",
    vat: str | None = "19",
    flat: str | None = None,
) -> str:
    """One OCPI tariff as an inline table: energy at ``price`` per kWh (+ ``vat`` %), and a
    ``flat`` start fee as a second element when given."""
    tax = f', vat = "{vat}"' if vat is not None else ""
    parts = [("ENERGY", price)] + ([("FLAT", flat)] if flat is not None else [])
    components = [
        f'{{ type = "{kind}", price = "{amount}"{tax}, step_size = 1 }}' for kind, amount in parts
    ]
    elements = ",\n  ".join(f"{{ price_components = [ {c} ] }}" for c in components)
    return f'{{ id = "{tariff_id}", currency = "{currency}", elements = [\n  {elements} ] }}'


def nexo_keys(
    encoding: str,
    *,
    sale_id: str,
    poi_id: str,
    pin: str = "",
    key: AdyenKey | None = None,
    passphrase: str | None = None,
) -> str:
    """A nexo terminal's lines (``terminal_extra`` of :func:`site_toml`); with ``key``, Adyen's
    pinned certificate (``pin``, hex) and the key, its passphrase the secret reference
    ``passphrase`` (default: the key's own, inline)."""
    text = (
        f'protocol = "nexo"\nencoding = "{encoding}"\nsale_id = "{sale_id}"\npoi_id = "{poi_id}"\n'
    )
    if key is not None:
        secret = passphrase or f'{{ value = "{key.passphrase}" }}'
        text += (
            f'pinned_sha256 = "{pin}"\nkey = {{ identifier = "{key.identifier}", '
            f"version = {key.version}, passphrase = {secret} }}\n"
        )
    return text


def site_toml(
    db: Path | str | None,
    terminals: Mapping[str, str],
    *,
    site: str = "TEST",
    country: str = "DE",
    site_keys: str = "",
    api_port: int = 0,
    api: str = "",
    daemon: str = "",
    zvt_pin: str | None = "123456",
    terminal_extra: str = "",
    terminal_keys: Mapping[str, str] | None = None,
    charger: str | None = 'mode = "simulated"',
    evses: Mapping[str, str] | None = None,
    evse_keys: str = "",
    pricing: str = "",
    tariffs: Sequence[str] | None = None,
    default_tariff: str = "T",
    tariff_price: str = "0.50",
    vat: str | None = "19",
    cpo: CpoSimulator | None = None,
    extra: str = "",
) -> str:
    """A whole site's config for the tests that run or parse one, the one place that writes it.

    The terminals (id -> device URL; the ZVT password ``zvt_pin`` unless None; ``terminal_extra``
    on each, ``terminal_keys`` per id), the charger (``charger`` lines, None: no charger) with
    its EVSEs (id -> terminal, ``evse_keys`` on each; default E1 on the first terminal), the
    pricing (``pricing`` lines, ``tariffs`` as inline tables, by default one energy tariff "T"
    at ``tariff_price`` + ``vat`` %; no tariffs: no ``[pricing]``), the store at ``db`` (None:
    none), the API on ``api_port``, ``[daemon]`` when ``daemon`` has lines, ``[upstream]`` to
    ``cpo`` when given; ``site_keys`` and ``api`` add keys to their sections, ``extra`` adds
    whole sections at the end."""
    per_terminal = terminal_keys or {}
    secret = f'password = {{ value = "{zvt_pin}" }}\n' if zvt_pin is not None else ""
    blocks = "".join(
        f'[[terminals]]\nid = "{t}"\ndevice = "{d}"\n{secret}{terminal_extra}\n'
        f"{per_terminal.get(t, '')}\n"
        for t, d in terminals.items()
    )
    text = f'\n[site]\nid = "{site}"\ncountry = "{country}"\n{site_keys}\n'
    if db is not None:
        text += f'[storage]\npath = "{db}"\n'
    text += f"[api]\nport = {api_port}\n{api}\n"
    if daemon:
        text += f"[daemon]\n{daemon}\n"
    text += blocks
    if charger is not None:
        mapping = evses if evses is not None else {"E1": next(iter(terminals))}
        text += f"[charger]\nenabled = true\n{charger}\n" + "".join(
            f'[[charger.evses]]\nid = "{e}"\nterminal = "{t}"\n{evse_keys}\n'
            for e, t in mapping.items()
        )
    if tariffs is None:
        tariffs = [tariff_toml(default_tariff, price=tariff_price, vat=vat)]
    if tariffs:
        listed = ",\n".join(tariffs)
        text += (
            f'[pricing]\ndefault_tariff = "{default_tariff}"\n{pricing}\ntariffs = [ {listed} ]\n'
        )
    if cpo is not None:
        text += upstream_toml(cpo)
    return text + extra + "\n"


def route_site(
    currency: str,
    *,
    price: str,
    terminal: str,
    route: str,
    device: str = "tcp://127.0.0.1:10",
    terminal_extra: str = "",
    pricing: str = "",
    route_keys: str = "",
) -> str:
    """Terminal t1 in EUR on E1 (tariff "EUR-T" at 0.50/kWh), and ``terminal`` at ``device`` in
    ``currency`` that only the route ``route`` names, with its tariff "<currency>-T" at
    ``price``; the route's section (``route_keys`` last) ends the text, so a test can add keys."""
    return site_toml(
        None,
        {"t1": "tcp://127.0.0.1:9", terminal: device},
        site="S",
        terminal_extra=terminal_extra,
        terminal_keys={terminal: f'currency = "{currency}"'},
        pricing=pricing,
        default_tariff="EUR-T",
        tariffs=[
            tariff_toml("EUR-T", vat=None),
            tariff_toml(f"{currency}-T", currency=currency, price=price, vat=None),
        ],
        extra=f'[[routes]]\nid = "{route}"\nterminals = ["{terminal}"]\nevses = ["E1"]\n'
        f'tariff = "{currency}-T"\n{route_keys}\n',
    )


def write_config(directory: Path, *, port: int | None = None, extra: str = "") -> Path:
    """``directory/gateway.toml``: a site with no terminal and no charger, the store beside it,
    the API on ``port`` (a free one by default), a short shutdown grace; ``extra`` appended."""
    path = directory / "gateway.toml"
    text = site_toml(
        directory / "evpay.sqlite3",
        {},
        site="TEST-SITE",
        site_keys='name = "test site"',
        api_port=port if port is not None else free_port(),
        api='host = "127.0.0.1"',
        daemon="shutdown_grace_s = 3.0",
        charger=None,
        tariffs=(),
        extra=extra,
    )
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Site:
    sim: SimTerminal
    cpo: CpoSimulator
    charger: SimulatedCharger
    daemon: Daemon

    async def until(self, done: Callable[[], object], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.05)

    def session(self) -> dict[str, Any]:
        (row,) = [r for r in self.daemon.store.sessions() if not r["id"].startswith("orphan")]
        return row


@pytest.fixture
async def start_site(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_site(country, fiscal_on_fac="", wait_s=15, terminal="", extra="")``: a
    running site."""
    running: list[tuple[Site, asyncio.Task[int], PtyPort, asyncio.Task[None]]] = []

    async def make(
        country: str,
        fiscal_on_fac: str = "",
        wait_s: float = 15,
        terminal: str = "",
        extra: str = "",
    ) -> Site:
        cpo = CpoSimulator()
        cpo.state.fiscal_on_fac = fiscal_on_fac
        await cpo.start()
        port = PtyPort()
        sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
        serving = asyncio.create_task(sim.serve_line(port))
        charger = SimulatedCharger(["E1"])
        text = site_toml(
            tmp_path / f"{country}.sqlite3",
            {"t1": f"serial://{port.slave_path}"},
            site=f"{country}-SITE",
            country=country,
            site_keys='timezone = "Europe/Zagreb"',
            terminal_extra=terminal,
            evse_keys=f'meter_public_key = "{METER_KEY}"',
            pricing='fixed_hold = { EUR = "50.00" }\nhold_min = "1.00"',
            tariff_price="0.40",
            vat="25",
            cpo=cpo,
            extra=f'[fiscal]\nprofile = "{country}"\nwait_s = {wait_s}\n'
            'e_receipt_url = "https://receipts.example/{reference}"\n' + extra,
        )
        (tmp_path / f"{country}.toml").write_text(
            text, encoding="utf-8"
        )  # for the technician's CLI
        daemon = Daemon(parse_settings(text, "<fiscal>"), charger=charger)
        task = asyncio.create_task(daemon.run())
        s = Site(sim, cpo, charger, daemon)
        running.append((s, task, port, serving))
        await s.until(lambda: daemon.ready.is_set() and cpo.state.tokens, 15)
        return s

    yield make
    for s, task, port, serving in running:
        s.daemon.request_stop("test over")
        await task
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await port.close()
        await s.cpo.stop()
        await s.charger.close()
