"""The charger adapter: what a charger link heard, as the engine's typed events.

Every link (MQTT firmware, the CPO over OCPI, the simulator) hands over the port's message types
(``gateway.payments.charger``); this module maps each to one engine event and checks a signed
meter record against the EVSE's key here at the edge, so that the engine gets a verdict, not a
record to parse. A pay request is not an engine event: it goes to admission, which answers at
once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from drivers.money import Money
from gateway.errors import QueueFull
from gateway.fiscal.meter import SignedMeter
from gateway.fiscal.meter import check as check_meter
from gateway.payments import charger as port
from gateway.payments import events as e
from gateway.payments.preauth import Target
from gateway.runtime.admission import PayAnswer

_LOGGER = logging.getLogger(__name__)


def engine_event(
    heard: port.ChargerEvent, signed: SignedMeter | None = None, *, evse_is_sender: bool = True
) -> e.Event | None:
    """The engine event for a charger message (``signed``: its meter record, checked); None for
    a pay request (admission's) and for a message that carries nothing for the engine.
    ``evse_is_sender``: the EVSE named is the one the message came from (checked by the engine
    against the session's)."""
    sender = heard.evse if evse_is_sender else None
    match heard:
        case port.ChargeStarted():
            return e.ChargerStarted(
                session_id=heard.session_id,
                event_id="started",
                meter_wh=heard.meter_wh,
                evse=sender,
            )
        case port.MeterRead():
            return e.MeterValue(
                session_id=heard.session_id,
                # the reading is part of the key: a second, different reading under a known seq
                # is screened on its own, never taking the true reading's key (issue 27)
                event_id=f"meter:{heard.seq}:{heard.meter_wh}",
                meter_wh=heard.meter_wh,
                trusted=heard.trusted,
                signed=signed,
                evse=sender,
            )
        case port.ChargeStopped():
            return e.ChargerStopped(
                session_id=heard.session_id,
                # per charger message: a refused (implausible) stop never blocks the true one
                event_id=f"stopped:{heard.message_id}" if heard.message_id else "stopped",
                meter_wh=heard.meter_wh,
                session_energy_wh=heard.session_energy_wh,
                reason=heard.reason,
                invoicer=heard.invoicer,
                invoice_reference=heard.invoice_reference,
                signed=signed,
                evse=sender,
            )
        case port.ChargeFaulted():
            return e.ChargerFaulted(
                session_id=heard.session_id,
                event_id="faulted",
                reason=heard.reason or "fault",
                evse=sender,
            )
        case port.PriceCorrection():
            return e.PriceCorrected(
                session_id=heard.session_id,
                event_id=f"price-{heard.reason.replace(' ', '-')}",
                total_minor=heard.total_minor,
                reason=heard.reason,
                currency=heard.currency or None,
            )
    return None


@dataclass(slots=True, kw_only=True)
class ChargerAdapter:
    submit: Callable[[e.Event, Callable[[], None] | None], None]  # may raise QueueFull
    pay: Callable[[str, str | None, Target | None], PayAnswer]
    currency: Callable[[str], str | None]  # evse -> the currency its amounts are in
    plug_allowed: Callable[[str], bool]  # may a plug-in at this EVSE ask for payment?
    meter_keys: Mapping[str, str] = field(default_factory=dict)  # evse -> meter key (OCMF)
    # the EVSE a message names is the one it came from (an MQTT tree): the engine refuses it for
    # a session of another EVSE. False over OCPI, where it is the CPO's evse_uid.
    evse_is_sender: bool = True

    def heard(self, heard: port.ChargerEvent) -> None:
        """One message from the link. It is acknowledged (``done``) once its step is stored, or
        at once when it changes nothing; a message refused because the engine's queue is full is
        not acknowledged (over MQTT the broker keeps it and delivers it again after a restart)."""
        if isinstance(heard, port.PaymentRequested):
            try:
                self._payment_requested(heard)  # stored (or refused) before this returns
            except QueueFull as exc:
                self._refused(heard, exc)
                return
            if heard.done is not None:
                heard.done()
            return
        signed = None
        if isinstance(heard, port.MeterRead | port.ChargeStopped) and heard.signed is not None:
            signed = check_meter(heard.signed, self.meter_keys.get(heard.evse))
        event = engine_event(heard, signed, evse_is_sender=self.evse_is_sender)
        if event is None:
            if heard.done is not None:
                heard.done()
            return
        try:
            self.submit(event, heard.done)
        except QueueFull as exc:
            self._refused(heard, exc)

    @staticmethod
    def _refused(heard: port.ChargerEvent, exc: QueueFull) -> None:
        """Said in the log and left unacknowledged."""
        _LOGGER.warning(
            "engine.queue_full",
            extra={"queue": exc.queue, "evse": heard.evse, "kind": heard.kind, "reason": str(exc)},
        )

    def _payment_requested(self, heard: port.PaymentRequested) -> None:
        if not self.plug_allowed(heard.evse):
            _LOGGER.warning(
                "engine.payment_refused",
                extra={"evse": heard.evse, "reason": "plug starts disabled"},
            )
            return
        target = None
        currency = self.currency(heard.evse)
        if heard.target_kwh is not None:
            target = Target(kwh=heard.target_kwh)
        elif heard.target_amount is not None and currency is not None:
            target = Target(amount_minor=Money.parse(str(heard.target_amount), currency).minor)
        answer = self.pay(heard.evse, heard.request_id or None, target)
        if answer.status != 202:
            _LOGGER.warning(
                "engine.payment_refused", extra={"evse": heard.evse, "reason": answer.message}
            )
