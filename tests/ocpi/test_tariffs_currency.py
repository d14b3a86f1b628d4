"""Issue 26, item 2: a tariff the CPO publishes for an EVSE in a currency its terminal cannot
charge in is refused (the EVSE keeps the tariff it has) and reported upstream; a session must
never be started that cannot be priced."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.ocpi.client import Reply
from gateway.ocpi.tariffs import pull_tariffs
from gateway.payments.tariff import Dimension, PriceComponent, Tariff, TariffElement
from gateway.runtime.app import Daemon
from gateway.runtime.charger import SimulatedCharger
from gateway.settings import parse_settings
from tests.site_rig import site_toml


def _tariff(tid: str, currency: str, price: str) -> Tariff:
    return Tariff(
        tid, currency, (TariffElement((PriceComponent(Dimension.ENERGY, Decimal(price)),)),)
    )


def test_a_pushed_tariff_in_a_currency_the_terminal_cannot_charge_is_refused_and_reported(
    tmp_path: Path,
) -> None:
    text = site_toml(
        tmp_path / "t.sqlite3",
        {"t1": "tcp://127.0.0.1:9"},
        evses={"E1": "t1", "E2": "t1"},
    )
    daemon = Daemon(parse_settings(text, "<t>"), charger=SimulatedCharger(["E1", "E2"]))
    try:
        assert daemon.engine is not None
        chf, eur = _tariff("CPO-CHF", "CHF", "0.60"), _tariff("CPO-EUR", "EUR", "0.40")
        daemon._apply_tariffs({"E1": chf, "E2": eur}, {"CPO-CHF": chf, "CPO-EUR": eur})
        policy = daemon.engine.host.policy
        assert policy.tariff("E1") is not None and policy.tariff("E1").currency == "EUR"  # type: ignore[union-attr]
        assert policy.tariff("E1").id == "T"  # type: ignore[union-attr]  # kept its own
        assert policy.tariff("E2") is eur  # a chargeable one is taken
        refused = daemon.store.outbox.list(kind="tariff.refused")
        assert [m.payload for m in refused] == [
            {
                "evse_uid": "E1",
                "tariff_id": "CPO-CHF",
                "tariff_currency": "CHF",
                "terminal": "t1",
                "terminal_currency": "EUR",
                "reason": "the terminal charges in EUR, the tariff is in CHF",
            }
        ]
        # the next refresh says the same: reported once
        daemon._apply_tariffs({"E1": chf}, {"CPO-CHF": chf})
        assert len(daemon.store.outbox.list(kind="tariff.refused")) == 1
    finally:
        daemon.store.close()
        daemon.lock.release()


class _Cpo:
    """The CPO's Sender interfaces as pull_tariffs reads them: one page per URL."""

    def __init__(self, pages: dict[str, list[dict[str, Any]]]) -> None:
        self.pages = pages

    async def request(self, method: str, url: str, body: Any = None) -> Reply:
        return Reply(200, 1000, self.pages[url], "")


def _owned(raw: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "country_code": "DE", "party_id": "CPO", "last_updated": "2026-01-01T00:00:00Z"}


def test_a_pulled_tariff_restricted_by_current_is_refused_and_reported(tmp_path: Path) -> None:
    """min/max_current cannot be evaluated from meter values: the EVSE keeps its tariff and the
    CPO is told why (the same refused-tariff path as a currency the terminal cannot charge)."""
    by_current = _owned(
        {
            "id": "AMPS",
            "currency": "EUR",
            "elements": [
                {
                    "price_components": [{"type": "TIME", "price": 1.0, "step_size": 900}],
                    "restrictions": {"max_current": 32.0},
                },
                {"price_components": [{"type": "TIME", "price": 2.0, "step_size": 600}]},
            ],
        }
    )
    evse = {"uid": "E1", "connectors": [{"id": "1", "tariff_ids": ["AMPS"]}]}
    cpo = _Cpo({"t": [by_current], "l": [_owned({"id": "L1", "evses": [evse]})]})
    by_evse, catalog = asyncio.run(pull_tariffs(cpo, "t", "l"))  # type: ignore[arg-type]
    assert by_evse["E1"].refused and "AMPS" not in catalog
    text = site_toml(tmp_path / "t.sqlite3", {"t1": "tcp://127.0.0.1:9"}, evses={"E1": "t1"})
    daemon = Daemon(parse_settings(text, "<t>"), charger=SimulatedCharger(["E1"]))
    try:
        assert daemon.engine is not None
        daemon._apply_tariffs(by_evse, catalog)
        assert daemon.engine.host.policy.tariff("E1").id == "T"  # type: ignore[union-attr]
        [refused] = daemon.store.outbox.list(kind="tariff.refused")
        assert refused.payload["tariff_id"] == "AMPS"
        assert "max_current" in refused.payload["reason"]
    finally:
        daemon.store.close()
        daemon.lock.release()
