"""Pulls of Locations (tariff ids per EVSE) and Tariffs from the CPO (mod_locations,
mod_tariffs Sender interfaces), following ``Link: <…>; rel="next"`` pagination. The engine
then prices with the CPO's own tariffs; a session keeps the tariff it started with."""

from __future__ import annotations

import logging
import re
from typing import Any

from gateway.ocpi.client import OcpiClient
from gateway.ocpi.models import Location
from gateway.payments.tariff import Tariff, tariff_from_ocpi
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
