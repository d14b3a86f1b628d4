"""Device profiles: what the runner needs to know about a terminal model, and its quirks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    capture_mode: Literal["partial_reversal", "book_total"] = "partial_reversal"
    amount_minor: int = 1000  # the test pre-authorisation (10.00)
    capture_minor: int = 400
    quirks: tuple[str, ...] = ()


PROFILES = {
    p.name: p
    for p in (
        Profile(
            "zvt-serial", "any ZVT terminal over RS-232 or USB CDC-ACM (serial:///dev/…?baud=9600)"
        ),
        Profile("zvt-tcp", "any ZVT terminal over TCP (tcp://IP:PORT; 20007 is common)"),
        Profile(
            "nexo-xml",
            "any nexo POI speaking nexo 3.1 XML over HTTP (--protocol nexo, "
            "http://HOST:PORT/EPASSaleToPOI/3.1; Swedbank Pay / PAX)",
            quirks=("captures by Completion only: both capture scenarios send one",),
        ),
        Profile(
            "feig-cvend-plug",
            "Feig cVEND plug (unattended, EV chargers; ZVT over TCP port 22000 or serial)",
            quirks=(
                "End-of-Day is refused while a pre-authorisation is open: release or capture them "
                "first",
                "may end a sequence with a long 06 0F completion carrying TLV instead of 06 0F 00",
                "answers 06 23 with an Abort carrying BMP 87 when asked about an unknown receipt",
            ),
        ),
    )
}
