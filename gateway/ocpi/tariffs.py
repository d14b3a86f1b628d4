"""Pulls of Locations (tariff ids per EVSE) and Tariffs from the CPO (mod_locations,
mod_tariffs Sender interfaces), following ``Link: <…>; rel="next"`` pagination. The engine
then prices with the CPO's own tariffs; a session keeps the tariff it started with."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.ocpi.client import OcpiClient
from gateway.ocpi.models import Location
from gateway.payments.tariff import Tariff, tariff_from_ocpi
from gateway.store import JournalEntry, OutboxMessage, Step
from gateway.wire import OcpiTariff

_LOGGER = logging.getLogger(__name__)
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
MAX_PAGES = 1000


async def pull_all(client: OcpiClient, url: str) -> list[Any]:
    """Every object of a paginated Sender list."""
    objects: list[Any] = []
    next_url: str | None = url
    for _ in range(MAX_PAGES):
        if next_url is None:
            break
        reply = await client.request("GET", next_url)
        objects.extend(reply.data or [])
        match = _NEXT.search(reply.link or "")
        next_url = match.group(1) if match else None
    return objects


async def pull_tariffs(
    client: OcpiClient, tariffs_url: str, locations_url: str
) -> tuple[dict[str, Tariff], dict[str, Tariff]]:
    """(tariff by EVSE uid, tariff by id) as the CPO publishes them now."""
    catalog: dict[str, Tariff] = {}
    for raw in await pull_all(client, tariffs_url):
        try:
            tariff = tariff_from_ocpi(OcpiTariff.model_validate(raw).to_json())
        except ValueError as exc:  # one bad tariff must not hide the good ones
            _LOGGER.warning(
                "upstream.tariff_invalid",
                extra={"tariff": str(raw.get("id", "?"))[:36], "error": str(exc)},
            )
            continue
        catalog[tariff.id] = tariff
    by_evse: dict[str, Tariff] = {}
    for raw in await pull_all(client, locations_url):
        location = Location.model_validate(raw)
        for evse in location.evses or ():
            ids = [tid for c in evse.connectors for tid in (c.tariff_ids or ()) if tid in catalog]
            if ids:
                by_evse[evse.uid] = catalog[ids[0]]
    return by_evse, catalog


@dataclass(frozen=True, slots=True)
class RefusedTariff:
    """A tariff the CPO gives an EVSE whose terminal cannot charge in its currency."""

    evse: str
    tariff: Tariff
    terminal: str
    terminal_currency: str

    def payload(self) -> dict[str, str]:
        return {
            "evse_uid": self.evse,
            "tariff_id": self.tariff.id,
            "tariff_currency": self.tariff.currency,
            "terminal": self.terminal,
            "terminal_currency": self.terminal_currency,
        }

    def step(self) -> Step:
        """Journaled and reported upstream once per (EVSE, tariff, currency): the next pull
        says the same and changes nothing."""
        key = f"tariff-refused:{self.evse}:{self.tariff.id}:{self.tariff.currency}"[:200]
        payload = self.payload()
        return Step(
            key,
            journal=[JournalEntry("upstream", self.evse, "tariff_refused", payload)],
            outbox=[OutboxMessage(key, f"tariff-refused:{self.evse}", "tariff.refused", payload)],
        )


def chargeable(
    by_evse: Mapping[str, Tariff], terminals: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, Tariff], list[RefusedTariff]]:
    """The CPO's tariffs this site can charge: an EVSE's tariff must be in the currency of the
    terminal that pays for it (``terminals``: EVSE -> (terminal, its currency)), or every
    session there would hold the driver's money and never be priced. A refused tariff leaves
    the EVSE with the tariff it has; an EVSE this site does not have is ignored."""
    usable: dict[str, Tariff] = {}
    refused: list[RefusedTariff] = []
    for evse, tariff in by_evse.items():
        if evse not in terminals:
            continue
        terminal, currency = terminals[evse]
        if tariff.currency == currency:
            usable[evse] = tariff
        else:
            refused.append(RefusedTariff(evse, tariff, terminal, currency))
    return usable, refused
