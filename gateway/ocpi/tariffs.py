"""Pulls of Locations (tariff ids per EVSE) and Tariffs from the CPO (mod_locations,
mod_tariffs Sender interfaces), following ``Link: <…>; rel="next"`` pagination. The engine
then prices with the CPO's own tariffs; a session keeps the tariff it started with.

A connector may list several tariff ids: the spec's way to replace a tariff is to list the old
and the new one, the old ending (``end_date_time``) where the new starts; and a connector may
have a tariff per kind (``type``): a card paid at our terminal is an AD_HOC_PAYMENT, not the
REGULAR (RFID/contract) price. ``applicable`` chooses, at the time of the pull.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.ocpi.client import OcpiClient
from gateway.ocpi.models import Location
from gateway.payments.tariff import Tariff, UnpriceableTariff
from gateway.payments.tariff_lint import step_size_hazards
from gateway.payments.tariff_ocpi import tariff_from_ocpi
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


# A card paid at the terminal is ad hoc; an untyped tariff is for every session; REGULAR is the
# contract price, used only when nothing else is given; PROFILE_* need charging preferences,
# which a terminal payment never sets (never chosen).
_KIND_RANK = {"AD_HOC_PAYMENT": 0, None: 1, "REGULAR": 2}


def applicable(ids: list[str], terms: Mapping[str, OcpiTariff], now: datetime) -> str | None:
    """Of a connector's tariff ids (in the CPO's order), the one a terminal payment starting
    ``now`` pays: valid now (``start_date_time`` <= now < ``end_date_time``: OCPI's end is when
    the tariff becomes inactive, the instant its replacement starts), the best kind."""
    ranked = []
    for n, tid in enumerate(ids):
        t = terms.get(tid)
        if t is None or t.type not in _KIND_RANK:
            continue
        if (t.start_date_time is not None and now < t.start_date_time) or (
            t.end_date_time is not None and now >= t.end_date_time
        ):
            continue
        ranked.append((_KIND_RANK[t.type], n, tid))
    return min(ranked)[2] if ranked else None


async def pull_tariffs(
    client: OcpiClient, tariffs_url: str, locations_url: str, now: datetime | None = None
) -> tuple[dict[str, Tariff], dict[str, Tariff]]:
    """(tariff by EVSE uid, tariff by id) as the CPO publishes them now. An EVSE whose tariff
    cannot be priced here (``UnpriceableTariff``) gets a stand-in with ``refused`` set (no
    elements, never in the catalog): ``chargeable`` reports it upstream and keeps the EVSE's
    tariff."""
    when = now or datetime.now(UTC)
    catalog: dict[str, Tariff] = {}
    terms: dict[str, OcpiTariff] = {}
    for raw in await pull_all(client, tariffs_url):
        try:
            wire = OcpiTariff.model_validate(raw)
            terms[wire.id] = wire
            catalog[wire.id] = tariff_from_ocpi(wire.to_json())
        except UnpriceableTariff as exc:  # kept, to be refused where an EVSE uses it
            catalog[exc.tariff_id] = Tariff(wire.id, wire.currency, (), refused=exc.reason)
        except ValueError as exc:  # one bad tariff must not hide the good ones
            terms.pop(str(raw.get("id", "")), None)
            _LOGGER.warning(
                "upstream.tariff_invalid",
                extra={"tariff": str(raw.get("id", "?"))[:36], "error": str(exc)},
            )
    by_evse: dict[str, Tariff] = {}
    for raw in await pull_all(client, locations_url):
        location = Location.model_validate(raw)
        for evse in location.evses or ():
            ids = [tid for c in evse.connectors for tid in (c.tariff_ids or ())]
            chosen = applicable(ids, terms, when)
            if chosen is not None:
                by_evse[evse.uid] = catalog[chosen]
    return by_evse, {tid: t for tid, t in catalog.items() if not t.refused}


@dataclass(frozen=True, slots=True)
class RefusedTariff:
    """A tariff the CPO gives an EVSE that this site cannot charge: its terminal works in
    another currency, or the tariff cannot be priced here (``reason`` says why)."""

    evse: str
    tariff: Tariff
    terminal: str
    terminal_currency: str
    reason: str = ""

    def payload(self) -> dict[str, str]:
        return {
            "evse_uid": self.evse,
            "tariff_id": self.tariff.id,
            "tariff_currency": self.tariff.currency,
            "terminal": self.terminal,
            "terminal_currency": self.terminal_currency,
            "reason": self.reason
            or f"the terminal charges in {self.terminal_currency}, the tariff is in "
            f"{self.tariff.currency}",
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
        if tariff.refused:
            refused.append(RefusedTariff(evse, tariff, terminal, currency, tariff.refused))
        elif tariff.currency == currency:
            usable[evse] = tariff
        else:
            refused.append(RefusedTariff(evse, tariff, terminal, currency))
    return usable, refused


def step_size_warnings(catalog: Mapping[str, Tariff]) -> list[Step]:
    """The pulled tariffs whose coarse ``step_size`` a change of power or of the clock drops
    (``tariff_lint.step_size_hazards``): priced as OCPI says (the CPO's CDR is), but journaled
    for the operator as ``upstream``/``tariff_step_size``, once per tariff id and findings (the
    next pull of the same tariff changes nothing; a changed one is said again)."""
    steps: list[Step] = []
    for tid, tariff in sorted(catalog.items()):
        found = [h.text() for h in step_size_hazards(tariff)]
        if not found:
            continue
        digest = hashlib.sha256("\n".join(found).encode()).hexdigest()[:16]
        payload = {"tariff_id": tid, "warnings": found}
        entry = JournalEntry("upstream", tid, "tariff_step_size", payload)
        steps.append(Step(f"tariff-step-size:{tid}:{digest}"[:200], journal=[entry]))
    return steps
