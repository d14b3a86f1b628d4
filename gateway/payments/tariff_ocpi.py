"""OCPI Tariff JSON (2.2.1/2.3.0 shape) → ``Tariff``: the boundary where a tariff is read, and
refused when this engine cannot price it as its owner means it (``UnpriceableTariff``: config
validation fails on it; a pulled tariff is kept as a refused stand-in and reported upstream).

Split from tariff.py (which prices); the rules of reading are here:
- Elements with a ``reservation`` restriction price reservations, which this site does not sell:
  they are left out.
- ``min_current``/``max_current`` cannot be evaluated (the meter data has no current): refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, time
from decimal import Decimal
from typing import Any

from gateway.payments.tariff import (
    Dimension,
    PriceComponent,
    Restrictions,
    Tariff,
    TariffElement,
    UnpriceableTariff,
)


def tariff_from_ocpi(obj: Mapping[str, Any]) -> Tariff:
    """Build a Tariff from an OCPI Tariff object (dict). ValueError names the bad field;
    UnpriceableTariff (a ValueError) says why a well-formed tariff cannot be priced here."""
    tid = str(obj.get("id", "?"))
    try:
        charging = [
            e for e in obj["elements"] if not (e.get("restrictions") or {}).get("reservation")
        ]
        for n, e in enumerate(charging):
            unknown = sorted(_CURRENT & set(e.get("restrictions") or {}))
            if unknown:
                raise UnpriceableTariff(
                    tid,
                    f"element {n} restricts by {'/'.join(unknown)}: the charging current is not "
                    "in this site's meter data, so when the element applies cannot be known",
                )
        if not charging:
            raise UnpriceableTariff(tid, "only reservation elements: nothing prices charging")
        _bounds_priceable(tid, obj, charging)
        return Tariff(
            id=tid,
            currency=str(obj["currency"]),
            elements=tuple(
                _element(e, tax_included=obj.get("tax_included") == "YES") for e in charging
            ),
            min_price=_price_excl(obj.get("min_price")),
            max_price=_price_excl(obj.get("max_price")),
            preauthorize_amount=None
            if obj.get("preauthorize_amount") is None
            else Decimal(str(obj["preauthorize_amount"])),
            min_price_incl=_price_incl(obj.get("min_price")),
            max_price_incl=_price_incl(obj.get("max_price")),
        )
    except UnpriceableTariff:
        raise
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(f"tariff {tid}: {type(exc).__name__} {exc}") from None


_CURRENT = frozenset({"min_current", "max_current"})


def _bounds_priceable(tid: str, obj: Mapping[str, Any], charging: list[Any]) -> None:
    """A min/max_price given excluding VAT only, on a tariff whose components carry different
    VAT rates, is refused.

    The bound fixes the total excluding VAT, but not how much of it carries which rate, so the
    price the driver pays (including VAT) is not defined by the tariff. Spreading it by the
    session's own mix of rates (what we did) makes the gross fall when more energy at the lower
    rate arrives under the cap (30.03 then 30.02 one second later): a driver pays less for more,
    and a shown price goes down. Capping the gross at the highest gross reached instead would
    make the price depend on the path of the session, not on what it used: harder to explain to
    a driver or a CPO checking our CDR. Refusing is one rule anyone can check against the tariff:
    give the bound including VAT too (2.3.0 ``after_taxes``/``taxes``, 2.2.1 ``incl_vat``), or
    one VAT rate for every component. A uniform rate scales exactly; a bound including VAT
    states the gross. Config validation fails with this reason; a pulled tariff is reported
    upstream as refused (gateway/ocpi/tariffs.py)."""
    rates = {
        Decimal(str(c.get("vat") or 0)) for e in charging for c in e.get("price_components") or ()
    }
    if len(rates) < 2:
        return
    for key in ("min_price", "max_price"):
        bound = obj.get(key)
        if bound is not None and _price_incl(bound) is None:
            raise UnpriceableTariff(
                tid,
                f"{key} is given excluding VAT only, but the components carry VAT rates "
                f"{', '.join(f'{r}%' for r in sorted(rates))}: the price including VAT under that "
                "bound is not defined; give it including VAT too, or one VAT rate throughout",
            )


def _price_incl(value: Any) -> Decimal | None:
    """The bound including VAT: 2.3.0 ``after_taxes``, 2.2.1 ``incl_vat``, or ``before_taxes``
    plus the ``taxes`` listed (the wire model's form of a 2.2.1 price)."""
    if not isinstance(value, Mapping):
        return None
    raw = value.get("after_taxes", value.get("incl_vat"))
    if raw is not None:
        return Decimal(str(raw))
    if value.get("taxes") and value.get("before_taxes") is not None:
        taxes = sum((Decimal(str(t["amount"])) for t in value["taxes"]), Decimal(0))
        return Decimal(str(value["before_taxes"])) + taxes
    return None


def _price_excl(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(
        value, Mapping
    ):  # {"excl_vat": .., "incl_vat": ..} (2.2.1) or {"before_taxes": ..} (2.3.0)
        raw = value.get("excl_vat", value.get("before_taxes"))
        return None if raw is None else Decimal(str(raw))
    return Decimal(str(value))


def _element(e: Mapping[str, Any], *, tax_included: bool) -> TariffElement:
    comps = tuple(
        PriceComponent(
            Dimension(c["type"]),
            Decimal(str(c["price"])),
            None if c.get("vat") is None else Decimal(str(c["vat"])),
            int(c.get("step_size", 1)),
            tax_included=tax_included,
        )
        for c in e["price_components"]
    )
    r = e.get("restrictions") or {}

    def dec(key: str) -> Decimal | None:
        return None if r.get(key) is None else Decimal(str(r[key]))

    def clock(key: str) -> time | None:
        return None if r.get(key) is None else time.fromisoformat(r[key])

    def day(key: str) -> date | None:
        return None if r.get(key) is None else date.fromisoformat(r[key])

    restrictions = Restrictions(
        start_time=clock("start_time"),
        end_time=clock("end_time"),
        start_date=day("start_date"),
        end_date=day("end_date"),
        min_kwh=dec("min_kwh"),
        max_kwh=dec("max_kwh"),
        min_power=dec("min_power"),
        max_power=dec("max_power"),
        min_duration=None if r.get("min_duration") is None else int(r["min_duration"]),
        max_duration=None if r.get("max_duration") is None else int(r["max_duration"]),
        day_of_week=frozenset(r.get("day_of_week") or ()),
    )
    return TariffElement(comps, restrictions)
