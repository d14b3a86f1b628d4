"""An Adyen terminal as a technician configures it (https device, pinned certificate, key with
its passphrase by secret reference) built through the registry, paying against the simulator
over real loopback TLS with the key's encryption."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.money import Money
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from gateway.cli.doctor_cmd import run_checks
from gateway.runtime.engine_setup import build_terminal
from gateway.settings import check_secrets, parse_settings
from tests.nexo.conftest import KEY, self_signed
from tests.site_rig import nexo_keys, site_toml


def site(port: int, pin: str) -> str:
    """One Adyen terminal ``a1`` at the simulator on ``port``; the key's passphrase from the
    environment (NEXO_PASS)."""
    adyen = nexo_keys(
        "adyen-json",
        sale_id="EVPAY-1",
        poi_id="POI-SIM-1",
        pin=pin,
        key=KEY,
        passphrase='{ env = "NEXO_PASS" }',
    )
    return site_toml(
        "evpay.sqlite3",
        {"a1": f"https://127.0.0.1:{port}/nexo"},
        site="S1",
        zvt_pin=None,
        terminal_extra=adyen,
        charger=None,
        tariffs=(),
    )


async def test_an_adyen_terminal_from_its_settings_pays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, fingerprint = self_signed(tmp_path)
    poi = NexoPoi(PoiConfig(encoding="adyen-json", key=KEY))
    runner, port = await serve_nexo_poi(poi, tls=tls)
    text = site(port, fingerprint.hex())
    settings = parse_settings(text, str(tmp_path / "site.toml"))
    assert check_secrets(settings) == [
        "terminals.0.key.passphrase: environment variable NEXO_PASS is not set"
    ]
    monkeypatch.setenv("NEXO_PASS", KEY.passphrase)
    assert check_secrets(settings) == []
    term = build_terminal(settings, settings.terminals[0])
    try:
        pre = await term.preauthorize(Money(3000, "EUR"), "ADYEN-1")
        assert pre.approved and pre.ref is not None, pre
        cap = await term.capture(pre.ref, Money(3000, "EUR"), Money(1234, "EUR"), "A")
        assert cap.approved and poi.booked() == Decimal("12.34")
        assert poi.raw and all(b"NexoBlob" in raw for raw in poi.raw)  # sealed with the key
    finally:
        await term.close()
        await runner.cleanup()
    assert (tmp_path / "nexo-a1.json").exists()  # the driver's state, beside the store


async def test_doctor_asks_a_nexo_terminal_itself(tmp_path: Path) -> None:
    """``evpay doctor`` without its daemon probes the nexo POI through the registry (Diagnosis),
    and names a POI that does not answer."""
    poi = NexoPoi(PoiConfig(encoding="xml"))
    runner, port = await serve_nexo_poi(poi)
    config = tmp_path / "site.toml"
    nexo = 'protocol = "nexo"\npoi_id = "POI-SIM-1"'
    device = f"http://127.0.0.1:{port}/EPASSaleToPOI/3.1"
    text = site_toml(
        "evpay.sqlite3",
        {"n1": device},
        site="S1",
        api_port=1,
        zvt_pin=None,
        terminal_extra=nexo,
        charger=None,
        tariffs=(),
    )
    try:
        config.write_text(text, "utf-8")
        checks = {c.name: c for c in await asyncio.to_thread(run_checks, config)}
        assert checks["terminal n1"].status == "pass", checks["terminal n1"]
    finally:
        await runner.cleanup()
    gone = {c.name: c for c in await asyncio.to_thread(run_checks, config)}
    assert gone["terminal n1"].status == "fail", gone["terminal n1"]
