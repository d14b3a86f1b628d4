"""The Adyen site every daemon-level acquirer test builds: the nexo POI simulator speaking
Adyen's JSON, the CPO simulator, the simulated Adyen Checkout API whose signed webhooks go to
the daemon's OCPI listener, and the site TOML that wires them. One builder, so the end-to-end
tests, the kill test and the crash campaign cannot drift apart in how the site is wired.

Only the parts outside the daemon start here; each test starts its daemon its own way (in
process, or ``evpay run`` to be killed)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography.fernet import Fernet

from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from gateway.acquirer.sim import AdyenSimulator, SimState
from gateway.ocpi.cpo_sim import CpoSimulator
from tests.acquirer.rig import API_KEY, HMAC_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER
from tests.helpers import free_port

EVSE = "DE*EVP*A1"
SIMULATED_CHARGER = '[charger]\nenabled = true\nmode = "simulated"\n'
TEMPLATE = """
[site]
id = "E2E-ADYEN"
country = "DE"
timezone = "Europe/Berlin"
[storage]
path = "{db}"
[api]
port = {api}
[daemon]
shutdown_grace_s = 5
[[terminals]]
id = "a1"
protocol = "nexo"
device = "http://127.0.0.1:{poi}/nexo"
encoding = "adyen-json"
lab_plain_http = true
sale_id = "EVPAY-E2E"
poi_id = "POI-SIM-1"
modifications = "adyen"
{terminal_extra}
[acquirers.adyen]
base_url = "http://127.0.0.1:{acq}/v71"
merchant_account = "EVPayTest"
api_key = {{ value = "{api_key}" }}
hmac_key = {{ value = "{hmac}" }}
webhook_username = "{user}"
webhook_password = {{ value = "{password}" }}
webhook_deadline_s = {deadline}
timeout_s = 2
[upstream]
enabled = true
allow_insecure_http = true
versions_url = "{versions}"
token_a = {{ value = "{token_a}" }}
key = {{ value = "{fernet}" }}
listen = "127.0.0.1:{listen}"
public_url = "http://127.0.0.1:{listen}/ocpi/versions"
{charger}{evses}[pricing]
strategy = "{strategy}"
fixed_hold = {{ EUR = "50.00" }}
incremental_initial = "2.00"
incremental_step = "2.00"
hold_min = "1.00"
safety_margin = "0.10"
retry_initial_s = 1
default_tariff = "T1"
tariffs = [ {{ id = "T1", currency = "EUR", elements = [
  {{ price_components = [ {{ type = "ENERGY", price = "0.50", vat = "19", step_size = 1 }} ] }},
  {{ price_components = [ {{ type = "FLAT", price = "1.00", vat = "19", step_size = 1 }} ] }} ] }} ]
"""


@dataclass
class AdyenSite:
    """The parts outside the daemon, and the TOML that points the daemon at them."""

    poi: NexoPoi
    poi_runner: web.AppRunner
    cpo: CpoSimulator
    adyen: AdyenSimulator
    acq_port: int  # where the simulated Adyen listens (or will, once started)
    listen: int  # the daemon's OCPI listener, where the webhooks go
    text: str  # the site TOML

    async def close(self) -> None:
        await self.adyen.stop()
        await self.cpo.stop()
        await self.poi_runner.cleanup()


async def open_site(
    db: Path,
    *,
    deadline: float,
    variants: Collection[str] = (),
    slow_s: float = 1.0,
    started: bool = True,
    incremental: bool = False,
    evses: Collection[str] = (EVSE,),
    charger: str = SIMULATED_CHARGER,
    api_port: int = 0,
    make: Callable[[SimState], AdyenSimulator] = AdyenSimulator,
) -> AdyenSite:
    """Start the POI, the CPO and (``started``) the acquirer; ``make`` builds the acquirer from
    its state (the campaign's aimed subclass). ``charger`` is the TOML's charger section
    without its EVSEs (the campaign's MQTT one); every EVSE is on terminal ``a1``."""
    poi = NexoPoi(PoiConfig(encoding="adyen-json"))
    poi_runner, poi_port = await serve_nexo_poi(poi)
    cpo = CpoSimulator()
    await cpo.start()
    listen, acq_port = free_port(), free_port()
    state = SimState(
        api_key=API_KEY,
        hmac_key=HMAC_KEY,
        merchant_account="EVPayTest",
        webhook_url=f"http://127.0.0.1:{listen}/acquirer/adyen/notifications",
        webhook_user=WEBHOOK_USER,
        webhook_password=WEBHOOK_PASSWORD,
        variants=set(variants),
        slow_s=slow_s,
    )
    adyen = make(state)
    if started:
        await adyen.start("127.0.0.1", acq_port)
    text = TEMPLATE.format(
        db=db,
        api=api_port,
        poi=poi_port,
        acq=acq_port,
        api_key=API_KEY,
        hmac=HMAC_KEY,
        user=WEBHOOK_USER,
        password=WEBHOOK_PASSWORD,
        deadline=deadline,
        versions=cpo.versions_url,
        token_a=cpo.state.token_a,
        fernet=Fernet.generate_key().decode(),
        listen=listen,
        charger=charger,
        evses="".join(f'[[charger.evses]]\nid = "{e}"\nterminal = "a1"\n' for e in evses),
        strategy="incremental" if incremental else "fixed",
        terminal_extra="incremental = true" if incremental else "",
    )
    return AdyenSite(poi, poi_runner, cpo, adyen, acq_port, listen, text)
