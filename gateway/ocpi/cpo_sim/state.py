"""What the embedded CPO holds (what it stored, the tokens it issued) and what a test can tell
it (faults to inject, quirks of real peers, the charge it runs)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

VERSION = "2.3.0"
QUIRKS = (
    "auth403",
    "plain422",
    "redirect_slash",
    "put_terminals",
    "no_partial_success",
    "require_website",
    "foreign_endpoints",
)


@dataclass
class CpoState:
    token_a: str = "token-a-for-the-ptp"  # noqa: S105 - the simulator's registration token, not a secret
    tokens: set[str] = field(default_factory=set)  # credentials tokens (C) issued
    faults: deque[str] = field(default_factory=deque)
    slow_s: float = 2.0
    facs: dict[str, dict[str, Any]] = field(default_factory=dict)
    fac_posts: list[str] = field(default_factory=list)  # ids in arrival order, duplicates included
    terminals: dict[str, dict[str, Any]] = field(default_factory=dict)
    registered: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    # the standard flow: a StartSession runs a simulated charge and pushes it to the PTP
    session_kwh: Decimal = Decimal(6)
    kwh_step: Decimal = Decimal(1)
    push_interval_s: float = 0.05
    price_per_kwh: Decimal = Decimal("0.50")
    commands: list[str] = field(default_factory=list)
    stop_requested: set[str] = field(default_factory=set)
    cdrs: list[dict[str, Any]] = field(default_factory=list)
    tariffs: list[dict[str, Any]] = field(default_factory=list)  # OCPI Tariff objects it publishes
    fiscal_lines: list[str] = field(
        default_factory=list
    )  # sent after the CDR (custom module DEEVPfiscal)
    # The invoicing system's answer to a FAC (local flow): "" none; "signed" an invoice with ZKI and
    # JIR (Croatia); "zki_only" the tax authority is down (ZKI now, JIR later); "invoice" no
    # signature.
    fiscal_on_fac: str = ""
    fiscal_delay_s: float = 0.0
    fiscal_sent: list[dict[str, Any]] = field(default_factory=list)
    receipts: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # DEEVPfiscal PUTs, by reference
    refunds: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # DEEVPrecon refund PUTs, by id
    reports: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # DEEVPrecon reconciliation reports
    locations: list[dict[str, Any]] = field(default_factory=list)
    callback: bool = True  # call the PTP's versions back during registration
    require_ids: bool = True  # refuse requests without X-Request-ID / X-Correlation-ID
    quirks: set[str] = field(default_factory=set)
    down: bool = False  # an outage: every request is answered 503 until it is over
    callbacks: list[str] = field(
        default_factory=list
    )  # what the registration callback saw, for tests
    ptp_token: str | None = None  # the PTP's token B as the CPO holds it (for its pushes)
    ptp_versions_url: str | None = None
