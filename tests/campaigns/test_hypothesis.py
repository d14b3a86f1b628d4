"""Every parser of outside bytes under hypothesis (the fuzz campaign's targets): inputs drawn
and shrunk by hypothesis, next to the campaign's seeded mutations — edited real examples, and
for the JSON parsers documents built from the examples' own keys with values of any type.
Only the parser's own typed errors may come out, and nothing may hang."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.campaigns import fuzz

TARGETS = {t.name: t for t in fuzz.targets()}
SEEDS = {name: t.seeds() for name, t in TARGETS.items()}


@st.composite
def edited(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real example with a few bytes replaced, inserted or cut, or truncated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(("set", "insert", "cut"))):
            case "set" if at < len(data):
                data[at] = draw(st.integers(0, 255))
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            case "cut":
                del data[at : at + draw(st.integers(1, 16))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _keys(seeds: list[bytes]) -> list[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for raw in seeds:
        try:
            walk(json.loads(raw))
        except ValueError:
            continue
    return sorted(found) or ["id"]


def documents(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """JSON built from the examples' own keys, with values of any JSON type: the shapes a
    confused or hostile peer sends."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=40)
    )
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(_keys(seeds)), inner, max_size=6)
        ),
        max_leaves=20,
    )
    return values.map(lambda doc: json.dumps(doc).encode())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_only_typed_errors(name: str) -> None:
    target, seeds = TARGETS[name], SEEDS[name]
    inputs = edited(seeds) | st.binary(max_size=300)
    if target.structured:
        inputs = inputs | documents(seeds)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(inputs)
    def check(data: bytes) -> None:
        found = fuzz.check(target, data)
        assert found is None, (found.kind, found.error)

    check()
