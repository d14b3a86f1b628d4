"""The charger adapter: each message type of the charger port becomes one typed engine event,
field for field; a pay request goes to admission; a refused message is not acknowledged."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from gateway.errors import QueueFull
from gateway.payments import charger as port
from gateway.payments import events as e
from gateway.payments.preauth import Target
from gateway.runtime.admission import PayAnswer
from gateway.runtime.charger_adapter import ChargerAdapter, engine_event


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        (
            port.ChargeStarted(evse="E1", session_id="s1", meter_wh=1_000),
            e.ChargerStarted("s1", "started", 1_000, "E1"),
        ),
        (
            port.MeterRead(evse="E1", session_id="s1", meter_wh=1_500, seq=3, trusted=False),
            e.MeterValue("s1", "meter:3:1500", 1_500, False, None, "E1"),
        ),
        (
            port.ChargeStopped(
                evse="E1",
                session_id="s1",
                meter_wh=5_000,
                session_energy_wh=4_000,
                reason="CDR received",
                invoicer="cpo",
                invoice_reference="INV-1",
            ),
            e.ChargerStopped(
                session_id="s1",
                event_id="stopped",
                meter_wh=5_000,
                session_energy_wh=4_000,
                reason="CDR received",
                invoicer="cpo",
                invoice_reference="INV-1",
                evse="E1",
            ),
        ),
        (  # over MQTT: one engine event per charger message (issue 27: a refused forged stop
            # must not take the key of the true stop that follows)
            port.ChargeStopped(
                evse="E1",
                session_id="s1",
                meter_wh=5_000,
                session_energy_wh=None,
                reason="EV full",
                message_id="m-9",
            ),
            e.ChargerStopped(
                session_id="s1",
                event_id="stopped:m-9",
                meter_wh=5_000,
                session_energy_wh=None,
                reason="EV full",
                evse="E1",
            ),
        ),
        (
            port.ChargeFaulted(evse="E1", session_id="s1", reason=""),
            e.ChargerFaulted("s1", "faulted", "fault", "E1"),
        ),
        (
            port.PriceCorrection(
                evse="E1", session_id="s1", total_minor=298, reason="corrected CDR C2"
            ),
            e.PriceCorrected(
                session_id="s1",
                event_id="price-corrected-CDR-C2",
                total_minor=298,
                reason="corrected CDR C2",
            ),
        ),
        (port.PaymentRequested(evse="E1"), None),  # admission's, not an engine event
    ],
)
def test_each_charger_message_is_one_engine_event(
    heard: port.ChargerEvent, expected: e.Event | None
) -> None:
    assert engine_event(heard) == expected


def adapter(
    submitted: list[e.Event], paid: list[tuple[str, str | None, Target | None]], *, full: bool
) -> ChargerAdapter:
    def submit(event: e.Event, done: Callable[[], None] | None) -> None:
        if full:
            raise QueueFull("the engine's event queue", 0)
        submitted.append(event)
        if done is not None:
            done()

    def pay(evse: str, key: str | None, target: Target | None) -> PayAnswer:
        paid.append((evse, key, target))
        return PayAnswer(202, "payment requested", "s1", "authorizing")

    return ChargerAdapter(
        submit=submit, pay=pay, currency=lambda _evse: "EUR", plug_allowed=lambda _evse: True
    )


def test_a_pay_request_carries_its_id_and_target_to_admission_and_is_acknowledged() -> None:
    submitted: list[e.Event] = []
    paid: list[tuple[str, str | None, Target | None]] = []
    acks: list[str] = []
    heard = port.PaymentRequested(
        evse="E1", request_id="m-7", target_amount=Decimal("12.50"), done=lambda: acks.append("x")
    )
    adapter(submitted, paid, full=False).heard(heard)
    assert paid == [("E1", "m-7", Target(amount_minor=1250))] and acks == ["x"]
    assert submitted == []


def test_a_message_the_full_queue_refuses_is_not_acknowledged() -> None:
    acks: list[str] = []
    started = port.ChargeStarted(evse="E1", session_id="s1", done=lambda: acks.append("x"))
    adapter([], [], full=True).heard(started)
    assert acks == []
