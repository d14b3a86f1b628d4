"""The OCPI charger link: an ambiguous StartSession keeps the hold (no fault), and the map from
our session to the CPO's session survives a restart (read back from the stored pushes)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import UpstreamUnreachable
from gateway.ocpi.charger import OcpiChargerLink
from gateway.ocpi.models import Cdr
from gateway.payments.charger import ChargerEvent, PriceCorrection
from gateway.store import InboxMessage, Step, Store
from tests.ocpi.cdrs import cdr as ocpi_cdr


class _Client:
    """A pure-unit stand-in for OcpiClient: fails as told, records what was sent."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.sent: list[tuple[str, str, Any]] = []

    async def request(self, method: str, url: str, body: Any = None, **_: Any) -> Any:
        self.sent.append((method, url, body))
        if self.error is not None:
            raise self.error
        return None


def _link(
    client: _Client, store: Store | None = None
) -> tuple[OcpiChargerLink, list[ChargerEvent]]:
    link = OcpiChargerLink(
        client,  # type: ignore[arg-type]  # a recording stand-in: the link calls request() only
        "http://cpo/commands",
        "http://gw/cmd",
        {"E1": "LOC1"},
        ("DE", "EVP"),
        lambda: datetime(2026, 1, 5, tzinfo=UTC),
        store,
    )
    events: list[ChargerEvent] = []
    link.subscribe(events.append)
    return link, events


async def test_an_ambiguous_start_session_keeps_the_hold() -> None:
    link, events = _link(_Client(UpstreamUnreachable("POST …: no answer in time", ambiguous=True)))
    await link.authorize("E1", "s1", 4950, "EUR")
    assert (
        events == []
    )  # no fault: the Session push, the CommandResult or the start timeout decides


async def test_a_start_session_that_never_arrived_is_a_fault() -> None:
    link, events = _link(_Client(UpstreamUnreachable("POST …: cannot connect", ambiguous=False)))
    await link.authorize("E1", "s1", 4950, "EUR")
    assert [e.kind for e in events] == ["faulted"]


async def test_stop_session_after_a_restart_finds_the_cpo_session_in_the_store(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "c.sqlite3")
    push = {"id": "CPO-SESSION-9", "authorization_reference": "EVP-s1", "kwh": 3}
    store.apply(Step("in", inbox=[InboxMessage("m1", "cpo", "session", push)]))
    client = _Client(None)
    link, _ = _link(client, store)  # a fresh link: nothing in memory
    assert link.cpo_session("s1") == "CPO-SESSION-9"
    await link.stop("E1", "s1", "cost cap reached")
    (queued,) = [m for m in store.outbox.list() if m.kind == "command.stop_session"]
    assert queued.payload["session_id"] == "CPO-SESSION-9"
    assert client.sent == []  # with a store the stop goes out through the outbox, not directly


def test_a_corrected_cdr_is_a_price_correction_and_a_replayed_one_is_not() -> None:
    link, events = _link(_Client(None))

    def cdr(cdr_id: str, before: str, vat: str) -> Cdr:
        return ocpi_cdr(cdr_id, before, vat=vat, invoice_reference_id="INV-1")

    link.cdr_pushed(cdr("CDR-1", "3.00", "0.57"))  # the CDR the session is billed with
    link.cdr_pushed(cdr("CDR-1", "3.00", "0.57"))  # the same one replayed: nothing
    link.cdr_pushed(cdr("CDR-2", "2.50", "0.48"))  # the CPO's correction: 2.98 incl. VAT
    assert [ev.kind for ev in events] == ["stopped", "price_corrected"]
    correction = events[1]
    assert isinstance(correction, PriceCorrection)
    assert correction.total_minor == 298 and correction.reason == "corrected CDR CDR-2"


async def test_an_authorisation_said_again_after_a_restart_is_not_a_second_start_session() -> None:
    """The engine repeats an authorisation that may have died with the process; over OCPI a
    second START_SESSION could start a second session, so the link leaves it to the first
    command's answer, the CPO's Session push or the start timeout."""
    client = _Client(UpstreamUnreachable("POST …: no answer in time", ambiguous=True))
    link, events = _link(client)
    await link.authorize("E1", "s1", 4950, "EUR")
    await link.authorize("E1", "s1", 4950, "EUR", repeat=True)
    assert len(client.sent) == 1 and events == []  # the first only
