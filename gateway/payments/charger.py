"""The charger port: what the engine hears from a charger and what it may ask of one — as
``drivers/base.py`` is for terminals. Every way to reach a charger implements ``ChargerLink``:
the in-process simulator (``gateway/runtime/charger.py``), the CPO in the OCPI standard flow
(``gateway/ocpi/charger.py``) and the charger firmware over MQTT (``firmware_bridge``).

A charger asks for payment (``payment_requested``, with the driver's declared target when it
has one), then reports started / meter / stopped / faulted for the session id the engine gave
it in ``authorize``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

Kind = Literal["payment_requested", "started", "meter", "stopped", "faulted", "price_corrected"]


@dataclass(frozen=True, slots=True)
class ChargerEvent:
    kind: Kind
    evse: str
    session_id: str = ""
    meter_wh: int | None = None
    session_energy_wh: int | None = None
    seq: int = 0
    reason: str = ""
    invoicer: str | None = (
        None  # OCPI flow: "cpo" when the CDR carries an invoice_reference_id, else "ptp"
    )
    invoice_reference: str | None = None
    target_kwh: Decimal | None = (
        None  # payment_requested: what the driver declared (kWh or an amount)
    )
    target_amount: Decimal | None = None
    trusted: bool = True  # meter: a signed or calibrated reading
    signed: str | None = None  # meter, stopped: the meter's signed record (OCMF text, byte-exact)
    total_minor: int | None = None  # price_corrected: the CPO's corrected total, VAT included
    # stopped: the charger's own id for the message, so a refused (implausible) stop never takes
    # the place of the true one that follows (the engine keys its steps by event id)
    message_id: str = ""
    # Called once the engine has stored what the event changed (or dropped it): a link that can
    # hold back its acknowledgement (MQTT) does so until then, so a message the gateway dies
    # holding is delivered again instead of lost.
    done: Callable[[], None] | None = field(default=None, compare=False, repr=False)


class ChargerEvents:
    """The subscriber list every charger link keeps: the engine subscribes, the link emits."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[ChargerEvent], None]] = []

    def subscribe(self, callback: Callable[[ChargerEvent], None]) -> None:
        self._callbacks.append(callback)

    def _emit(self, event: ChargerEvent) -> None:
        for callback in self._callbacks:
            callback(event)


class ChargerLink(Protocol):
    def subscribe(self, callback: Callable[[ChargerEvent], None]) -> None: ...
    async def authorize(
        self,
        evse: str,
        session_id: str,
        max_cost_minor: int,
        currency: str,
        start_by: datetime | None = None,
        repeat: bool = False,
    ) -> None:
        """Let ``evse`` charge for ``session_id``. ``repeat``: the same authorisation said again
        after a restart (the first may have died with the process); a link whose charger would
        not take a copy as the same one (a second start, a token that stops the charge) ignores
        it."""
        ...

    async def stop(self, evse: str, session_id: str, reason: str) -> None: ...
    async def display(self, evse: str, lines: Sequence[str]) -> None:
        """Text for the charger's screen (the price, before charging starts); a link without a
        screen of its own ignores it."""
        ...
