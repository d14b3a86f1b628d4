"""What a receipt is made of, and how a country profile turns it into lines: pure.

The engine knows the money, the energy, the tariff and the signed meter data; the CPO's
invoicing system knows the invoice and, where a country signs each receipt, the signature.
``ReceiptFacts`` is the engine's part, ``FiscalData`` the CPO's; a ``Profile``
(``gateway.fiscal.profiles``) says which fields its country requires and renders both. A
receipt that lacks a required field is never printed as if it were complete: it says what is
pending and where the complete receipt will be (the e-receipt reference).
"""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from drivers.money import Money
from drivers.money import currency as currency_info

WIDTH = (
    40  # characters per printed line (a 58 mm receipt printer's usual width in its default font)
)
DISPLAY_LINES = 8  # what ZVT's display text (06 E0) can show


class ReceiptState(StrEnum):
    """Where a session's receipt stands (shown by ``evpay sessions show``)."""

    NONE = ""  # no receipt from the gateway (the terminal prints its own payment slip)
    AWAITING = "awaiting_fiscal"  # captured; waiting a short while for the CPO's fiscal data
    COMPLETE = "complete"  # every field the profile requires was on the receipt
    PENDING = "pending"  # printed without the fiscal data: it follows as an e-receipt
    LATE = "delivered_late"  # the fiscal data arrived after the receipt: delivered as an e-receipt


@dataclass(frozen=True, slots=True)
class VatLine:
    rate: str  # percent, as the tariff gives it ("19"); "" when the tariff names none
    net_minor: int
    tax_minor: int


@dataclass(frozen=True, slots=True)
class MeterProof:
    """Signed meter data (OCMF) bound to the session, as the driver needs it to check the bill."""

    meter: str  # the meter's serial (OCMF MS)
    payload_sha256: str
    start_wh: int | None
    stop_wh: int | None
    verified: bool
    reason: str  # why it is (not) verified
    public_key: str = ""  # hex, what the transparency software needs


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    """The engine's side of a receipt, taken from the session when it is captured."""

    reference: (
        str  # the OCPI authorization_reference: our invoice reference unless the CPO gives one
    )
    evse: str
    at: datetime  # local time of the capture
    energy_wh: int
    price_minor: int
    paid_minor: int
    owed_minor: int
    currency: str
    vat: tuple[VatLine, ...]
    tariff: tuple[str, ...]  # the price as shown before charging
    card: Mapping[str, str] = field(default_factory=dict)  # brand, masked PAN (first 6, last 4)
    terminal_ref: str | None = None  # the booking's reference at the terminal (opaque text)
    meter: MeterProof | None = None
    e_receipt_url: str | None = None


@dataclass(frozen=True, slots=True)
class FiscalData:
    """The CPO's side (custom OCPI module DEEVPfiscal): its invoice and, where the country
    signs receipts, the signature fields by name (``zki``, ``jir``, …) and free lines."""

    invoice_reference: str | None = None
    invoice_url: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    lines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Receipt:
    lines: tuple[str, ...]
    missing: tuple[str, ...]  # required fields the receipt lacks (pending)
    upstream: tuple[str, ...]  # short lines for the FAC's eft_data and the CPO's receipt record

    @property
    def complete(self) -> bool:
        return not self.missing


def money(minor: int, cur: str) -> str:
    return str(Money(minor, cur))


def vat_breakdown(
    nets: Sequence[tuple[Decimal | None, Decimal]], price_minor: int, cur: str
) -> tuple[VatLine, ...]:
    """Per VAT rate: the net and the tax in minor units, rounded so that they add up to the price
    the driver paid (the rounding difference goes to the largest rate's tax)."""
    exponent = currency_info(cur).exponent
    by_rate: dict[Decimal, Decimal] = {}
    for rate, net in nets:
        key = rate if rate is not None else Decimal(-1)
        by_rate[key] = by_rate.get(key, Decimal(0)) + net
    if not by_rate or price_minor == 0:
        return ()
    lines = []
    for rate, net in sorted(by_rate.items()):
        net_minor = int(net.scaleb(exponent).to_integral_value(ROUND_HALF_UP))
        tax_minor = int(
            (net * max(rate, Decimal(0)) / 100).scaleb(exponent).to_integral_value(ROUND_HALF_UP)
        )
        lines.append(VatLine("" if rate < 0 else _plain(rate), net_minor, tax_minor))
    gap = price_minor - sum(v.net_minor + v.tax_minor for v in lines)
    # rounding once on the total (what was charged) vs per rate: the receipt adds up to the charge
    if gap:
        last = lines[-1]
        lines[-1] = VatLine(last.rate, last.net_minor, last.tax_minor + gap)
    return tuple(lines)


def printable(line: str, width: int = WIDTH) -> list[str]:
    """A line as the terminal can print it: accents dropped (ZVT text is code page 437, which has
    no č, ć, đ, š, ž), anything else unprintable as '?', wrapped at ``width``."""
    plain = unicodedata.normalize("NFKD", line)
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch))
    plain = plain.replace("đ", "d").replace("Đ", "D")
    plain = plain.encode("cp437", errors="replace").decode("cp437")
    plain = "".join(ch if ch.isprintable() else "?" for ch in plain)
    return textwrap.wrap(plain, width, break_long_words=True, break_on_hyphens=False) or [""]


def _plain(rate: Decimal) -> str:
    return format(rate.normalize(), "f")
