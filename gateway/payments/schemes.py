"""How long a pre-authorisation stays valid, by card scheme and acquirer profile.

Validity differs by scheme (Mastercard pre-auths 30 days, Visa 5 days since April 2024, many
PSPs 2 days for card-present) and by acquirer, so it is data: a table per scheme, overridable
per terminal (each terminal is one acquirer profile), with a conservative default for a card
whose scheme is unknown. The scheme is read from the approval's card data (AID first, it is
exact; then the brand text the terminal prints).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

# Registered application provider ids (the first 10 hex digits of an AID); longest match wins.
_AID_PREFIXES = (
    ("A0000000043060", "maestro"),
    ("A0000000042203", "maestro"),
    ("A000000004", "mastercard"),
    ("A000000003", "visa"),
    ("A000000025", "amex"),
    ("A000000359", "girocard"),
    ("A000000065", "jcb"),
    ("A000000152", "discover"),
    ("A000000333", "unionpay"),
)
_BRAND_WORDS = (
    ("maestro", "maestro"),
    ("master", "mastercard"),
    ("eurocard", "mastercard"),
    ("v pay", "visa"),
    ("vpay", "visa"),
    ("visa", "visa"),
    ("american express", "amex"),
    ("amex", "amex"),
    ("girocard", "girocard"),
    ("jcb", "jcb"),
    ("diners", "diners"),
)
UNKNOWN = "unknown"


def scheme_of(card: Mapping[str, str]) -> str:
    aid = card.get("aid", "").upper()
    for prefix, scheme in _AID_PREFIXES:
        if aid.startswith(prefix):
            return scheme
    brand = card.get("brand", "").lower()
    for word, scheme in _BRAND_WORDS:
        if word in brand:
            return scheme
    return UNKNOWN


@dataclass(frozen=True, slots=True)
class Validity:
    default: timedelta = timedelta(days=2)
    schemes: Mapping[str, timedelta] = field(
        default_factory=lambda: {"mastercard": timedelta(days=30), "visa": timedelta(days=5)}
    )
    terminals: Mapping[str, Mapping[str, timedelta]] = field(
        default_factory=dict
    )  # acquirer profile overrides

    def for_card(self, terminal: str, card: Mapping[str, str]) -> tuple[str, timedelta]:
        """(scheme, validity) for a hold approved on ``terminal`` for ``card``.

        A terminal's table is its acquirer's: it wins over the site's for every scheme, its
        default included (a 48 h acquirer lets a Mastercard hold lapse after 48 h whatever the
        scheme's own rule says). The site's table applies only to a terminal without one."""
        scheme = scheme_of(card)
        override = self.terminals.get(terminal)
        if override:
            if scheme in override:
                return scheme, override[scheme]
            if "default" in override:
                return scheme, override["default"]
        return scheme, self.schemes.get(scheme, self.default)


BRANDS = ("girocard", "jcb", "mastercard", "amex", "visa", "diners", "other")


def brand_group(card: Mapping[str, str]) -> str:
    """A card's group as the terminal totals its end of day (ZVT BMP 60) and as routes name
    brands: its scheme (``scheme_of``), or "other" for a scheme BMP 60 has no group for."""
    scheme = scheme_of(card)
    return scheme if scheme in BRANDS else "other"
