"""Which strategy a session pays with: the site's (or its route's) hold policy, cut to what its
terminal can do. One pure function of (policy, capabilities), called when a session starts.

``config validate`` already refuses an incremental strategy on a terminal without top-ups, and
any strategy on one without reservations (``Settings._check_capabilities``). The engine still
decides here, because it must never depend on that check having run: a policy built in code
(tests, bench, a future acquirer profile), or a terminal whose capabilities are narrower than
the site's default policy assumed, must still give a session a hold it can settle.

- incremental on a terminal without ``incremental``: a fixed hold at the cap (``hold_max``, or
  what the tariff says to hold). The small first hold would otherwise stop every charge at
  ``incremental_initial``: the terminal refuses every top-up.
- a terminal without ``release_open`` (a POI that refuses a Reversal of a reservation not yet
  completed): the unused hold is never released; a session that owes nothing lets it lapse
  (visible as lapsed, as the hold's validity says), and one that owes something captures it,
  which gives the rest back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from drivers.base import Capabilities
from gateway.payments.preauth import HoldPolicy

GiveBack = Literal["release", "lapse"]  # an uncompleted hold nothing is owed on


@dataclass(frozen=True, slots=True)
class StrategyChoice:
    hold: HoldPolicy  # the policy the session's hold is made and topped up with
    top_ups: bool  # the hold may grow as the charge goes
    give_back: GiveBack  # what becomes of a hold nothing is captured on
    notes: tuple[str, ...] = ()  # why the choice differs from the policy (the session's notes)


def choose_strategy(policy: HoldPolicy, caps: Capabilities, terminal: str) -> StrategyChoice:
    """The strategy a session at ``terminal`` (with ``caps``) pays with under ``policy``."""
    hold = policy
    notes: tuple[str, ...] = ()
    if policy.strategy == "incremental" and not caps.incremental:
        hold = replace(policy, strategy="fixed", fixed_minor={})  # fixed at hold_max
        notes = (f"terminal {terminal} cannot add to a hold: a fixed hold at the cap instead",)
    give_back: GiveBack = "release" if caps.release_open else "lapse"
    if give_back == "lapse":
        notes = (
            *notes,
            f"terminal {terminal} cannot release an uncompleted hold: an unused one lapses",
        )
    return StrategyChoice(hold, hold.strategy == "incremental", give_back, notes)
