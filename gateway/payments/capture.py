"""What we capture: ``capture_plan(session, policy)`` is the one place that answers it.

At the end of a charge (the charger's stop report, a fault, or no stop confirmation in time)
the plan takes the billed energy (``metering.billed_energy``: which source, and why), prices the
billed readings with the tariff the session started with, bills nothing for zero energy unless
the site says otherwise, caps the capture at what is held (the rest is a shortfall, owed) and
spreads the capture over the holds in order (the first ones captured, the rest released). An
amount the driver declared (``Target.amount_minor``) is a cap: never charged above it.

What follows is settlement, not a decision about the amount: ``settlement.py`` sends each
hold's target (``Capture``/``Release``) and books a hold's target on the terminal's approval
or its repeat of the last result showing it; the host (``last_result_owner.ambiguous``) only decides
whether such a repeat may be ours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from gateway.errors import InvariantViolated
from gateway.fiscal.receipt import VatLine, vat_breakdown
from gateway.payments.metering import billed_energy
from gateway.payments.model import BilledTo, HoldStatus, Reading, Session, update
from gateway.payments.policy import Policy
from gateway.payments.tariff import Sample
from gateway.payments.tariff_restrictions import inactive_wh


@dataclass(frozen=True, slots=True)
class Price:
    minor: int = 0
    excl: str = "0"  # before taxes (Decimal text), for the upstream tax split
    vat: tuple[VatLine, ...] = ()


@dataclass(frozen=True, slots=True)
class CapturePlan:
    energy_wh: int  # billed
    energy_source: str  # which reading it comes from (the rule in ``metering.py``)
    readings: tuple[Reading, ...]  # the billed readings, as priced
    price: Price
    capture_minor: int  # what is taken, over all holds: the price, capped by what is held
    targets: tuple[int | None, ...]  # per hold (in order): its capture; None: already settled
    shortfall_minor: int  # priced above what was held: owed
    notes: tuple[str, ...]  # what the session's notes get, in order


def capture_plan(s: Session, policy: Policy) -> CapturePlan:
    """What to capture from each hold of a session whose charge has ended (``billed_to`` set)."""
    energy, source, notes = billed_energy(s, policy)
    readings = s.metering.billed_readings()
    if s.metering.billed_to is BilledTo.STOP:
        at = max(s.metering.stopped_at or s.created_at, readings[-1].at)
        readings = (*readings, Reading(at, energy, True))
    price = price_of(s, readings, policy)
    if energy == 0 and not policy.bill_without_energy and price.minor:
        price = Price()
        notes = (*notes, "no energy delivered: nothing billed")
    free = _unpriced_wh(s, readings, policy)
    if free:
        notes = (*notes, f"{free} Wh delivered while no tariff element applied: not billed")
    payable = chargeable(s, price.minor)
    if payable < price.minor:
        notes = (
            *notes,
            f"priced {price.minor}, above the driver's declared {payable}: "
            f"{price.minor - payable} not charged",
        )
    capture = min(payable, s.authorized_minor)
    shortfall = payable - capture
    if shortfall:
        notes = (*notes, f"shortfall: priced {price.minor}, held {s.authorized_minor}")
    return CapturePlan(
        energy_wh=energy,
        energy_source=source,
        readings=readings,
        price=price,
        capture_minor=capture,
        targets=spread(s, capture),
        shortfall_minor=shortfall,
        notes=notes,
    )


def _unpriced_wh(s: Session, readings: tuple[Reading, ...], policy: Policy) -> int:
    """Energy no element of the session's tariff priced (outside every element's restrictions),
    rounded down to a Wh: given away, so said in the session's notes."""
    tariff = policy.pinned(s)
    if tariff is None or not tariff.elements:
        return 0
    points = [(r.at, Decimal(r.energy_wh)) for r in readings]
    return int(inactive_wh([e.restrictions for e in tariff.elements], points, policy.tz))


def chargeable(s: Session, price_minor: int) -> int:
    """What of a price the driver may be charged: never above the amount they declared."""
    if s.target_amount_minor is None:
        return price_minor
    return min(price_minor, s.target_amount_minor)


def owed(s: Session) -> int:
    """Priced (within the driver's declared amount) but not captured, and energy never billed."""
    return max(0, chargeable(s, s.bill.price_minor) - s.captured_minor) + s.bill.unpaid_minor


def spread(s: Session, amount: int) -> tuple[int | None, ...]:
    """``amount`` over the open holds in order: the first ones are captured, the rest released."""
    left, targets = amount, list[int | None]()
    for h in s.holds:
        if h.status is not HoldStatus.OPEN:
            targets.append(None)
            continue
        take = min(left, h.amount_minor)
        targets.append(take)
        left -= take
    return tuple(targets)


def with_targets(s: Session, targets: tuple[int | None, ...]) -> Session:
    holds = tuple(
        h if t is None else replace(h, target_minor=t)
        for h, t in zip(s.holds, targets, strict=True)
    )
    return replace(s, holds=holds)


def release_all(s: Session) -> Session:
    """Nothing is captured: every open hold is released."""
    return with_targets(s, spread(s, 0))


def price_of(s: Session, readings: tuple[Reading, ...], policy: Policy) -> Price:
    """The price (incl. and excl. taxes) of these readings with the session's pinned tariff."""
    tariff = policy.pinned(s)
    if tariff is None or not readings:
        return Price()
    if tariff.currency != s.currency:  # config validate refuses such a route
        raise InvariantViolated(
            f"session {s.id} in {s.currency} priced with tariff {tariff.id} in {tariff.currency}"
        )
    p = policy.pricer.price(tariff, [Sample(r.at, r.energy_wh) for r in readings], policy.tz)
    return Price(p.minor, str(p.excl_vat), vat_breakdown(p.nets, p.minor, s.currency))


def priced(s: Session, billed: tuple[Reading, ...], policy: Policy, **changes: object) -> Session:
    """The session with the price of these readings, and ``changes`` made in the same copy."""
    p = price_of(s, billed, policy)
    return update(s, price_minor=p.minor, price_excl=p.excl, vat=p.vat, **changes)


def apply_plan(s: Session, plan: CapturePlan) -> Session:
    """The session billed as planned (not yet moved to capturing or releasing)."""
    readings = s.metering.readings
    if s.metering.billed_to is BilledTo.STOP:
        readings = plan.readings  # the stop reading joins the log
    s = update(
        s,
        readings=readings,
        billed_energy_wh=plan.energy_wh,
        price_minor=plan.price.minor,
        price_excl=plan.price.excl,
        vat=plan.price.vat,
        notes=(*s.notes, *plan.notes),
    )
    if plan.shortfall_minor:
        s = update(s, shortfall_minor=plan.shortfall_minor)
    return with_targets(s, plan.targets)
