"""Country receipt profiles, selected per site (``[fiscal] profile``).

- ``none``: the gateway adds no receipt of its own; the CPO's lines, if it sends any, are printed
  as they come (the behaviour before profiles).
- ``DE``: charge points are exempt from the cash-register signing law (KassenSichV: no TSE
  signature per receipt); the calibration law (Eichrecht) wants the signed meter data (OCMF)
  with what the driver needs to check it, and the price as shown before charging. Everything is
  known at capture: the receipt is printed at once.
- ``HR``: Croatia's fiscalisation signs every receipt in the invoicing system (the CPO's): its
  protective code ZKI and the tax authority's JIR, and a QR code to check the receipt at the
  tax authority (``https://porezna.gov.hr/rn?jir=…&datv=YYYYMMDD_HHMM&izn=<cents>``, or
  ``zki=`` while the JIR is outstanding). The gateway waits briefly for the CPO's fields; without
  them it prints the receipt as *pending* and the fiscalised receipt follows as an e-receipt.

Why not ``fiskal-hr``: it is a client for the tax authority's SOAP service (zeep, xmlsec) that
computes the ZKI with the taxpayer's private key. Here the signing is the CPO's, and the gateway
only renders and checks what it receives; its QR helper also needs that key (it computes the
ZKI first), so the QR text is built here from the fields the CPO sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from gateway.fiscal.receipt import (
    DISPLAY_LINES,
    WIDTH,
    FiscalData,
    Receipt,
    ReceiptFacts,
    money,
    printable,
)

_HR_CHECK_URL = "https://porezna.gov.hr/rn"


@dataclass(frozen=True, slots=True)
class Profile:
    code: str
    signs_each_receipt: bool = False  # the receipt waits for the CPO's signature fields
    late_within: timedelta | None = None  # how long the fiscal data may follow a pending receipt
    from_cpo: tuple[
        str, ...
    ] = ()  # required fields the CPO's invoicing sends ("invoice" or a signature field)

    def render(self, facts: ReceiptFacts, fiscal: FiscalData | None) -> Receipt:
        raise NotImplementedError

    def display(self, receipt: Receipt) -> tuple[str, ...]:
        """For a terminal without a printer: the first lines that matter, at most 8."""
        keep = [line for line in receipt.lines if line.startswith(_DISPLAY_KEYS)]
        return tuple(keep[:DISPLAY_LINES])


_DISPLAY_KEYS = (
    "Total",
    "Energy",
    "Invoice",
    "QR",
    "e-receipt",
    "FISCAL DATA PENDING",
    "INCOMPLETE",
)


@dataclass(frozen=True, slots=True)
class NoProfile(Profile):
    def render(self, facts: ReceiptFacts, fiscal: FiscalData | None) -> Receipt:  # noqa: ARG002 - the CPO's lines only
        lines = tuple(out for line in (fiscal.lines if fiscal else ()) for out in printable(line))
        return Receipt(lines, (), ())


@dataclass(frozen=True, slots=True)
class Germany(Profile):
    def render(self, facts: ReceiptFacts, fiscal: FiscalData | None) -> Receipt:
        missing: list[str] = []
        lines = _head(facts, fiscal)
        lines.append("Price as shown before charging:")
        lines += [f"  {t}" for t in facts.tariff] or ["  (not known)"]
        if not facts.tariff:
            missing.append("tariff")
        lines += _money(facts)
        lines.append("Signed meter data (OCMF, Eichrecht):")
        upstream = [f"Invoice: {_invoice(facts, fiscal)}"]
        meter = facts.meter
        if meter is None:
            missing.append("signed meter data")
            lines.append("  not available from the meter")
        else:
            lines.append(f"  meter {meter.meter}")
            if meter.start_wh is not None and meter.stop_wh is not None:
                lines.append(f"  start {meter.start_wh} Wh, stop {meter.stop_wh} Wh")
            lines.append(
                f"  signature {'verified' if meter.verified else 'NOT VERIFIED: ' + meter.reason}"
            )
            lines.append(f"  record SHA-256 {meter.payload_sha256[:16]}")
            if meter.public_key:
                lines.append(f"  public key {meter.public_key}")
            lines.append("  check it with the transparency software")
            upstream.append(
                f"OCMF: meter {meter.meter} {meter.payload_sha256[:16]} "
                f"{'verified' if meter.verified else 'not verified'}"
            )
            if not meter.verified:
                missing.append("verified meter signature")
        lines.append("No TSE signature: charge points are exempt (KassenSichV)")
        lines += _cpo_lines(fiscal)
        return _finish(lines, missing, upstream, facts)


@dataclass(frozen=True, slots=True)
class Croatia(Profile):
    def render(self, facts: ReceiptFacts, fiscal: FiscalData | None) -> Receipt:
        fields = dict(fiscal.fields) if fiscal else {}
        missing = [name for name in self.from_cpo if not _has(name, fields, fiscal)]
        lines = _head(facts, fiscal)
        lines += _money(facts)
        lines.append("Nacin placanja: K (kartica)")
        upstream = [f"Invoice: {_invoice(facts, fiscal)}"]
        zki, jir = fields.get("zki"), fields.get("jir")
        if zki:
            lines.append(f"ZKI: {zki}")
            upstream.append(f"ZKI: {zki}")
        if jir:
            lines.append(f"JIR: {jir}")
            upstream.append(f"JIR: {jir}")
        elif zki:
            lines.append("JIR: pending (the receipt is reported within 2 days)")
        if zki or jir:
            lines.append(f"QR: {hr_check_url(jir, zki, _issued(fields, facts), facts.price_minor)}")
        lines += _cpo_lines(fiscal)
        return _finish(lines, missing, upstream, facts, self.from_cpo)


def hr_check_url(jir: str | None, zki: str | None, issued: datetime, total_minor: int) -> str:
    """The QR text of a Croatian receipt: check it at the tax authority by JIR (or ZKI while the
    JIR is outstanding), issue time to the minute, amount in cents without separators."""
    params = {"jir": jir} if jir else {"zki": zki or ""}
    params |= {"datv": issued.strftime("%Y%m%d_%H%M"), "izn": str(total_minor)}
    return f"{_HR_CHECK_URL}?{urlencode(params)}"


PROFILES: dict[str, Profile] = {
    "none": NoProfile("none"),
    "DE": Germany("DE"),
    "HR": Croatia(
        "HR",
        signs_each_receipt=True,
        late_within=timedelta(days=2),
        from_cpo=("invoice", "zki", "jir"),
    ),
}


def _has(name: str, fields: dict[str, str], fiscal: FiscalData | None) -> bool:
    if name == "invoice":
        return bool(fiscal and fiscal.invoice_reference)
    return bool(fields.get(name))


def _issued(fields: dict[str, str], facts: ReceiptFacts) -> datetime:
    """The time the CPO signed with (it is part of the ZKI), else the capture's."""
    try:
        return datetime.fromisoformat(fields["issued_at"]) if fields.get("issued_at") else facts.at
    except ValueError:
        return facts.at


def _invoice(facts: ReceiptFacts, fiscal: FiscalData | None) -> str:
    return (
        fiscal.invoice_reference if fiscal and fiscal.invoice_reference else None
    ) or facts.reference


def _head(facts: ReceiptFacts, fiscal: FiscalData | None) -> list[str]:
    lines = [
        f"EV charging at {facts.evse}",
        f"Date {facts.at:%Y-%m-%d %H:%M}",
        f"Invoice {_invoice(facts, fiscal)}",
    ]
    if fiscal and fiscal.invoice_url:
        lines.append(f"Invoice at {fiscal.invoice_url}")
    lines.append(f"Energy {facts.energy_wh / 1000:.3f} kWh")
    return lines


def _money(facts: ReceiptFacts) -> list[str]:
    cur = facts.currency
    lines = []
    for v in facts.vat:
        rate = f" {v.rate}%" if v.rate else ""
        lines.append(f"Net{rate} {money(v.net_minor, cur)}")
        lines.append(f"VAT{rate} {money(v.tax_minor, cur)}")
    lines.append(f"Total {money(facts.price_minor, cur)}")
    card = " ".join(x for x in (facts.card.get("brand"), facts.card.get("masked_pan")) if x)
    lines.append(f"Paid by card {money(facts.paid_minor, cur)}")
    if card:
        lines.append(f"  {card}")
    if facts.terminal_ref is not None:
        lines.append(f"  terminal receipt {facts.terminal_ref}")
    if facts.owed_minor:
        lines.append(f"Still owed {money(facts.owed_minor, cur)}")
    return lines


def _cpo_lines(fiscal: FiscalData | None) -> list[str]:
    return list(fiscal.lines) if fiscal else []


def _finish(
    lines: list[str],
    missing: list[str],
    upstream: list[str],
    facts: ReceiptFacts,
    from_cpo: tuple[str, ...] = (),
) -> Receipt:
    if missing:
        where = facts.e_receipt_url or f"ref {facts.reference}"
        lines += [
            "FISCAL DATA PENDING" if set(missing) & set(from_cpo) else "INCOMPLETE RECEIPT",
            f"missing: {', '.join(missing)}",
            f"e-receipt: {where}",
        ]
        upstream.append(f"Receipt: pending ({', '.join(missing)})")
    else:
        upstream.append("Receipt: complete")
    out = tuple(piece for line in lines for piece in printable(line, WIDTH))
    return Receipt(out, tuple(missing), tuple(u[:255] for u in upstream))
