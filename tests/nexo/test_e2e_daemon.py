"""End to end on a nexo terminal: the real daemon (store, supervisor, engine worker, the driver
built from its settings through the registry), a real SQLite file, the nexo POI simulator over
loopback HTTP (XML) and the in-process simulated charger. The POI's own ledger is the check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.nexo import messages as nm
from drivers.nexo.asyncio.terminal import NexoTerminal
from drivers.nexo.model import PaymentType
from drivers.nexo.wire import PATHS, Encoding
from drivers.sim.nexo_poi import NexoPoi, PoiConfig, serve_nexo_poi
from gateway.runtime.app import Daemon
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.settings import parse_settings
from tests.nexo.conftest import KEY, self_signed
from tests.payments.test_e2e import price_minor
from tests.site_rig import nexo_keys, site_toml, tariff_toml

EVSE = "DE*EVP*N1"


@dataclass
class Site:
    daemon: Daemon
    task: asyncio.Task[int]

    async def wait_final(self, timeout: float = 20) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                rows = self.daemon.store.sessions(limit=10)
                if rows and all(r["final"] for r in rows):
                    return rows[0]
                await asyncio.sleep(0.05)

    async def wait_state(self, state: str) -> dict[str, Any]:
        async with asyncio.timeout(15):
            while not (rows := self.daemon.store.sessions()) or rows[0]["state"] != state:
                await asyncio.sleep(0.02)
        return rows[0]


@dataclass
class Rig:
    poi: NexoPoi
    charger: SimulatedCharger
    start: Callable[..., Awaitable[Site]]


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """The POI in nexo 3.1 XML over http, or (``indirect`` "adyen-json") in Adyen's JSON over
    https with its certificate pinned and the key's encryption, as a technician configures it."""
    encoding: Encoding = getattr(request, "param", "xml")
    tls, pin = self_signed(tmp_path) if encoding == "adyen-json" else (None, b"")
    poi = NexoPoi(PoiConfig(encoding=encoding, key=KEY if tls else None))
    runner, port = await serve_nexo_poi(poi, tls=tls)
    device = f"{'https' if tls else 'http'}://127.0.0.1:{port}{PATHS[encoding]}"
    nexo = nexo_keys(
        encoding, sale_id="EVPAY-E2E", poi_id="POI-SIM-1", pin=pin.hex(), key=KEY if tls else None
    )
    charger = SimulatedCharger([EVSE])
    sites: list[Site] = []

    async def start(
        strategy: str = "fixed", terminal_extra: str = "", start_paths: str = '["plug", "kiosk"]'
    ) -> Site:
        text = site_toml(
            tmp_path / "e2e.sqlite3",
            {"n1": device},
            site="E2E-NEXO",
            site_keys='timezone = "Europe/Berlin"',
            daemon="shutdown_grace_s = 5",
            zvt_pin=None,
            terminal_extra=nexo + terminal_extra,
            charger=f'mode = "simulated"\nstart_paths = {start_paths}',
            evses={EVSE: "n1"},
            pricing=f'strategy = "{strategy}"\nfixed_hold = {{ EUR = "50.00" }}\n'
            'incremental_initial = "2.00"\nincremental_step = "2.00"\nhold_min = "1.00"\n'
            'safety_margin = "0.10"\nretry_initial_s = 1',
            default_tariff="T1",
            tariffs=[tariff_toml("T1", flat="1.00")],
        )
        daemon = Daemon(parse_settings(text, "<e2e-nexo>"), charger=charger)
        task = asyncio.create_task(daemon.run())
        async with asyncio.timeout(15):
            await daemon.ready.wait()
        site = Site(daemon, task)
        sites.append(site)
        return site

    yield Rig(poi, charger, start)
    for site in sites:
        if not site.task.done():
            site.daemon.request_stop("test over")
            await site.task
    await charger.close()
    await runner.cleanup()


def completions(poi: NexoPoi) -> int:
    """Completions the POI was sent (a repeated one would book twice on a real POI)."""
    return sum(
        1
        for m in poi.requests
        if isinstance(m.body, nm.PaymentRequest)
        and m.body.payment_data is not None
        and m.body.payment_data.payment_type is PaymentType.COMPLETION
    )


@pytest.mark.parametrize("rig", ["xml", "adyen-json"], indirect=True)
async def test_a_fixed_hold_session_is_paid_through_a_nexo_poi(rig: Rig) -> None:
    """The generic reservation flow, in both encodings (Adyen's: https, pinned, encrypted)."""
    site = await rig.start()
    assert isinstance(site.daemon.engine.terminals["n1"], NexoTerminal)  # type: ignore[union-attr]
    rig.charger.plug_in(EVSE, EvsePlan(energy_wh=8_000, step_wh=2_000))
    row = await site.wait_final()
    data = row["data"]
    assert row["state"] == "completed", data["notes"]
    assert data["authorized_minor"] == 5000
    assert data["captured_minor"] == price_minor(8_000) == 595
    assert data["released_minor"] == 5000 - 595
    (txn,) = rig.poi.ledger.values()  # one reservation, completed with the lower amount
    assert (txn.kind, txn.state, txn.amount, txn.booked) == (
        "reservation",
        "completed",
        Decimal("50.00"),
        Decimal("5.95"),
    )
    assert rig.poi.booked() == Decimal(data["captured_minor"]) / 100  # POI ledger == store
    assert rig.poi.open_reservations() == [] and completions(rig.poi) == 1
    (record,) = site.daemon.store.terminals()
    assert (record["protocol"], record["state"]) == ("nexo", "registered")
    if rig.poi.config.key is not None:  # every request sealed with the key, none in clear
        assert rig.poi.raw and all(b"NexoBlob" in raw for raw in rig.poi.raw)


@pytest.mark.parametrize("stop", ["graceful", "cancelled"])
async def test_a_restart_after_the_preauth_completes_once(rig: Rig, stop: str) -> None:
    """``cancelled``: the daemon's task is cancelled with no shutdown request (the nearest an
    in-process test comes to a kill; the crash campaign kills a real process)."""
    first = await rig.start()
    rig.charger.plug_in(EVSE, EvsePlan(energy_wh=20_000, step_wh=500, meter_interval_s=0.05))
    held = await first.wait_state("charging")  # the POI holds the amount; the EV charges
    assert [t.state for t in rig.poi.ledger.values()] == ["open"]
    if stop == "graceful":
        first.daemon.request_stop("restart")
        assert await first.task == 0
    else:
        first.task.cancel()
        await asyncio.gather(first.task, return_exceptions=True)
        first.daemon.store.close()
    second = await rig.start()  # same database, same driver state file, same POI
    row = await second.wait_final(timeout=30)
    assert row["id"] == held["id"] and row["state"] == "completed", row["data"]["notes"]
    captured = row["data"]["captured_minor"]
    assert captured == price_minor(row["data"]["billed_energy_wh"]) and captured > 0
    assert len(rig.poi.ledger) == 1 and completions(rig.poi) == 1  # nothing doubled
    assert rig.poi.booked() == Decimal(captured) / 100
    assert rig.poi.open_reservations() == []
    assert len(second.daemon.store.sessions()) == 1


async def test_an_incremental_session_tops_up_by_update_reservation(rig: Rig) -> None:
    """incremental = true on the nexo terminal: the hold grows by UpdateReservation on the one
    POI transaction, and the Completion books the price."""
    site = await rig.start(strategy="incremental", terminal_extra="incremental = true")
    # A meter value every 0.3 s, as a charger's (not every 20 ms): each top-up has a few steps of
    # headroom to be approved in, also on a loaded machine (at 20 ms one ran out: the charge
    # stopped at the hold's cap after 4 kWh, as it should).
    rig.charger.plug_in(EVSE, EvsePlan(energy_wh=8_000, step_wh=500, meter_interval_s=0.3))
    row = await site.wait_final(timeout=30)
    data = row["data"]
    assert row["state"] == "completed", data["notes"]
    assert data["captured_minor"] == price_minor(8_000) == 595
    (txn,) = rig.poi.ledger.values()  # one reservation, grown, completed once
    assert txn.amount > Decimal("2.00") and txn.state == "completed"
    assert rig.poi.booked() == Decimal("5.95") and completions(rig.poi) == 1


async def test_card_first_reads_the_card_by_card_acquisition(rig: Rig) -> None:
    """Card first on nexo: the daemon's card loop waits in a CardAcquisition until a card is
    presented; the session then starts at the terminal's one EVSE, and its reservation names
    the card read (CardAcquisitionReference), so the driver does not present it twice."""
    rig.poi.config.tap_required, rig.poi.config.card_wait_s = True, 1.0  # then "no card"
    site = await rig.start(terminal_extra="card_first = true", start_paths='["card"]')
    await asyncio.sleep(1.5)  # the loop waits in a CardAcquisition, then in the next one
    assert site.daemon.store.sessions() == []
    acquisitions = [m for m in rig.poi.requests if isinstance(m.body, nm.CardAcquisitionRequest)]
    assert acquisitions, "the card loop asks for a card by CardAcquisition"
    rig.poi.tap()
    async with asyncio.timeout(15):
        while not site.daemon.store.sessions():
            await asyncio.sleep(0.05)
    row = await site.wait_final(timeout=30)  # the simulated charger charges its default plan
    assert row["state"] == "completed", row["data"]["notes"]
    captured = row["data"]["captured_minor"]
    assert captured == price_minor(row["data"]["billed_energy_wh"]) and captured > 0
    reservations = [
        m.body
        for m in rig.poi.requests
        if isinstance(m.body, nm.PaymentRequest)
        and m.body.payment_type is PaymentType.FIRST_RESERVATION
    ]
    (first,) = reservations
    assert first.payment_data is not None and first.payment_data.card_acquisition_reference
    assert rig.poi.booked() == Decimal(row["data"]["captured_minor"]) / 100
    assert rig.poi.open_reservations() == []


async def test_a_poi_that_refuses_an_open_reversal_is_never_sent_one(rig: Rig) -> None:
    """release_open = false (a POI that refuses the Reversal of an uncompleted reservation): a
    charge with no energy releases nothing; no Reversal goes to the POI, the session ends with
    its hold left to lapse, visibly, and the POI still holds it (until its validity ends)."""
    rig.poi.config.refuse_open_reversal = True
    site = await rig.start(terminal_extra="release_open = false")
    rig.charger.plug_in(EVSE, EvsePlan(energy_wh=0, step_wh=1_000))
    row = await site.wait_final()
    data = row["data"]
    assert [h["status"] for h in data["holds"]] == ["lapsed"], data["notes"]
    assert data["captured_minor"] == 0 and "left to lapse" in " ".join(data["notes"])
    assert not any(isinstance(m.body, nm.ReversalRequest) for m in rig.poi.requests)
    assert len(rig.poi.open_reservations()) == 1 and rig.poi.booked() == 0
