"""The charger port: what the engine hears from a charger and what it may ask of one — as
``drivers/base.py`` is for terminals. Every way to reach a charger implements ``ChargerLink``:
the in-process simulator (``gateway/runtime/charger.py``), the CPO in the OCPI standard flow
(``gateway/ocpi/charger.py``) and the charger firmware over MQTT (``firmware_bridge``).

A charger asks for payment (``PaymentRequested``, with the driver's declared target when it
has one), then reports ``ChargeStarted`` / ``MeterRead`` / ``ChargeStopped`` / ``ChargeFaulted``
for the session id the engine gave it in ``authorize``; the CPO may later correct a billed total
(``PriceCorrection``). One frozen type per message, keyword-only, so a link cannot hand the
engine a meter value where it meant a session's energy (two Wh integers side by side).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import ClassVar, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class _Heard:
    """What every charger message carries: the EVSE, and how to acknowledge it."""

    kind: ClassVar[str]
    evse: str
    # Called once the engine has stored what the event changed (or dropped it): a link that can
    # hold back its acknowledgement (MQTT) does so until then, so a message the gateway dies
    # holding is delivered again instead of lost.
    done: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRequested(_Heard):
    """A driver asks to pay at ``evse``; ``request_id`` (the charger's message id, may be empty)
    is the pay request's idempotency key. The target is what the driver declared, if anything."""

    kind: ClassVar[str] = "payment_requested"
    request_id: str = ""
    target_kwh: Decimal | None = None
    target_amount: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeStarted(_Heard):
    kind: ClassVar[str] = "started"
    session_id: str
    meter_wh: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterRead(_Heard):
    kind: ClassVar[str] = "meter"
    session_id: str
    meter_wh: int
    seq: int
    trusted: bool = True  # a signed or calibrated reading
    signed: str | None = None  # the meter's signed record (OCMF text, byte-exact)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeStopped(_Heard):
    kind: ClassVar[str] = "stopped"
    session_id: str
    meter_wh: int | None
    session_energy_wh: int | None
    reason: str
    invoicer: str | None = None  # OCPI flow: "cpo" when the CDR carries an invoice_reference_id
    invoice_reference: str | None = None
    signed: str | None = None  # the meter's signed record (OCMF text, byte-exact)
    # The charger's own id for the message: a refused (implausible) stop must never take the
    # place of the true one that follows (the engine keys its steps by event id).
    message_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeFaulted(_Heard):
    kind: ClassVar[str] = "faulted"
    session_id: str
    reason: str = "fault"


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceCorrection(_Heard):
    """The CPO's corrected total for a session already billed (a corrected CDR), VAT included;
    ``seq`` tells one correction from the next."""

    kind: ClassVar[str] = "price_corrected"
    session_id: str
    total_minor: int
    reason: str
    seq: int = 0
    currency: str = ""  # the CDR's currency (the engine refuses one not the session's)


ChargerEvent = (
    PaymentRequested | ChargeStarted | MeterRead | ChargeStopped | ChargeFaulted | PriceCorrection
)


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
    async def report_state(self, evse: str, session_id: str) -> None:
        """Ask the charger to report its state for ``session_id`` now (a meter reading, or its
        stop or fault): after a meter silence. A link that cannot ask ignores it; the session
        then stops the charge when its bounded wait ends."""
        ...

    async def display(self, evse: str, lines: Sequence[str]) -> None:
        """Text for the charger's screen (the price, before charging starts); a link without a
        screen of its own ignores it."""
        ...
