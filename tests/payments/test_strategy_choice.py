"""The strategy a session pays with is a function of the policy and its terminal's
capabilities (``gateway/payments/strategy_choice.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from drivers.base import Capabilities
from gateway.payments.preauth import HoldPolicy, initial_hold
from gateway.payments.strategy_choice import choose_strategy

INCREMENTAL = HoldPolicy(
    "incremental",
    {"EUR": 5000},
    min_minor=100,
    max_minor=15000,
    incremental_initial_minor=2000,
    incremental_step_minor=2000,
)
NOW, TZ = datetime(2026, 12, 7, 12, tzinfo=UTC), ZoneInfo("Europe/Berlin")


def first_hold(policy: HoldPolicy) -> int:
    return initial_hold(policy, "EUR", None, None, NOW, TZ)


def test_incremental_on_a_terminal_that_tops_up_stays_incremental() -> None:
    choice = choose_strategy(INCREMENTAL, Capabilities(incremental=True), "t1")
    assert choice.hold == INCREMENTAL and choice.top_ups and choice.notes == ()
    assert first_hold(choice.hold) == 2000 and choice.give_back == "release"


def test_incremental_without_top_ups_is_a_fixed_hold_at_the_cap() -> None:
    """Not the small first hold: the terminal would refuse every top-up and each charge would
    stop at 20.00."""
    choice = choose_strategy(INCREMENTAL, Capabilities(incremental=False), "t1")
    assert choice.hold.strategy == "fixed" and not choice.top_ups
    assert first_hold(choice.hold) == INCREMENTAL.max_minor == 15000
    assert choice.notes == ("terminal t1 cannot add to a hold: a fixed hold at the cap instead",)


def test_fixed_and_target_are_kept_as_they_are() -> None:
    for strategy in ("fixed", "target"):
        policy = HoldPolicy(strategy, {"EUR": 5000}, min_minor=100, max_minor=15000)
        choice = choose_strategy(policy, Capabilities(), "t1")
        assert choice.hold is policy and not choice.top_ups and choice.notes == ()
    fixed = HoldPolicy("fixed", {"EUR": 5000}, min_minor=100, max_minor=15000)
    assert first_hold(choose_strategy(fixed, Capabilities(), "t1").hold) == 5000


def test_a_terminal_that_cannot_release_an_open_hold_lets_an_unused_one_lapse() -> None:
    choice = choose_strategy(INCREMENTAL, Capabilities(incremental=True, release_open=False), "n1")
    assert choice.give_back == "lapse" and choice.top_ups
    assert choice.notes == ("terminal n1 cannot release an uncompleted hold: an unused one lapses",)
