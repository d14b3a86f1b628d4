"""The transition table is the one truth: the README's diagram is generated from it, and the
engine cannot change state along an edge the table does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import InvariantViolated
from gateway.payments.states import (
    FINAL,
    LATE_EVIDENCE,
    TRANSITIONS,
    State,
    Trigger,
    mermaid,
    next_state,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_diagram_is_the_table() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("```mermaid\n", 1)[1].split("```", 1)[0].rstrip("\n")
    assert block == mermaid(), (
        "README diagram is stale: paste `python -m gateway.payments.states` into it"
    )


def test_an_edge_not_in_the_table_is_refused() -> None:
    with pytest.raises(InvariantViolated, match="not in the table"):
        next_state(State.DECLINED, Trigger.APPROVED)
    with pytest.raises(InvariantViolated):
        next_state(State.AUTHORIZED, Trigger.BILL)


def test_every_state_is_in_the_table_and_final_states_have_no_way_out() -> None:
    sources = {s for s, _ in TRANSITIONS}
    targets = set(TRANSITIONS.values())
    assert set(State) <= targets | sources
    # a final state has no way out but an unconfirmed capture decided by later evidence
    assert {(s, trigger) for s, trigger in TRANSITIONS if s in FINAL} == LATE_EVIDENCE
    assert set(State) - FINAL <= sources  # every open state has a way out
