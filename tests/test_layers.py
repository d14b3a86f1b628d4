"""Which package may import which: the direction of every dependency, read from the source.

The payment engine is a sans-I/O core (events and ``now`` in, commands out), so it imports no
event loop, no database, no HTTP and none of the layers that run it. The store keeps rows and
knows nothing of what they mean to payments, OCPI or the runtime, nor of the site's config:
its callers give it plain values. The drivers and the firmware bridge are libraries of their
own and never reach back into the gateway. Imports are read with ``ast`` (see
``tests.helpers.imports_of``), so one inside a function or under ``TYPE_CHECKING`` counts too.

A rule broken today by a file that is being reworked elsewhere is marked ``xfail(strict=True)``
with that file's name, so the mark must go as soon as the file is mended.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, imports_of


@dataclass(frozen=True)
class Rule:
    package: str  # a folder of the repository
    forbidden: tuple[str, ...]  # modules (and everything under them) it must not import
    why: str


RULES = (
    Rule(
        "gateway/payments",
        (
            "asyncio",
            "sqlite3",
            "aiohttp",
            "gateway.runtime",
            "gateway.store",
            "gateway.ocpi",
            "gateway.cli",
        ),
        "the engine is sans-I/O: events and now in, commands out",
    ),
    Rule(
        "gateway/store",
        ("gateway.payments", "gateway.ocpi", "gateway.runtime", "gateway.settings"),
        "the store keeps rows; its callers pass plain values, not the config",
    ),
    Rule("drivers", ("gateway",), "the terminal drivers are a library of their own"),
    Rule("firmware_bridge", ("gateway",), "the charger bridge is a library of their own"),
)


def offences(rule: Rule, root: Path = REPO) -> list[str]:
    return [
        f"{path.relative_to(root)} imports {module}"
        for path in sorted((root / rule.package).rglob("*.py"))
        for module in sorted(imports_of(path, root))
        if any(module == bad or module.startswith(bad + ".") for bad in rule.forbidden)
    ]


@pytest.mark.parametrize("rule", RULES, ids=[rule.package for rule in RULES])
def test_imports_point_one_way(rule: Rule) -> None:
    assert offences(rule) == [], f"{rule.package} must not import {rule.forbidden}: {rule.why}"


def test_only_the_store_imports_sqlite3() -> None:
    """The README's promise: one store API, so SQL lives in gateway/store and nowhere else."""
    users = sorted(
        str(path.relative_to(REPO))
        for package in ("gateway", "drivers", "firmware_bridge", "hil")
        for path in (REPO / package).rglob("*.py")
        if "sqlite3" in imports_of(path)
    )
    assert [u for u in users if not u.startswith("gateway/store/")] == []
    assert "gateway/store/db.py" in users  # the reader sees the real ones


def test_every_rule_names_a_package_that_exists() -> None:
    missing = [rule.package for rule in RULES if not list((REPO / rule.package).rglob("*.py"))]
    assert missing == []


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "from typing import TYPE_CHECKING\n"
        "import sqlite3 as db\n"
        "from gateway import runtime\n"
        "if TYPE_CHECKING:\n"
        "    from gateway.settings import Settings\n"
        "def f():\n"
        "    import asyncio\n",
        encoding="utf-8",
    )
    assert {"sqlite3", "gateway.runtime", "gateway.settings", "asyncio"} <= imports_of(sneaky)


def test_a_relative_import_is_read_against_its_package(tmp_path: Path) -> None:
    """``from ..store import db`` inside gateway/payments is an import of gateway.store.db."""
    engine = tmp_path / "gateway" / "payments"
    store = tmp_path / "gateway" / "store"
    store.mkdir(parents=True)
    engine.mkdir(parents=True)
    for package in (tmp_path / "gateway", engine, store):
        (package / "__init__.py").write_text("", encoding="utf-8")
    (store / "db.py").write_text("", encoding="utf-8")
    (engine / "sneaky.py").write_text(
        "from ..store import db\nfrom . import states\nfrom .. import store\n", encoding="utf-8"
    )
    assert imports_of(engine / "sneaky.py", tmp_path) == {
        "gateway.store.db",
        "gateway.payments",  # states is not a module there: a name from the package
        "gateway.store",
    }
    assert offences(RULES[0], tmp_path) == [
        "gateway/payments/sneaky.py imports gateway.store",
        "gateway/payments/sneaky.py imports gateway.store.db",
    ]


PACKAGES = ("gateway", "drivers", "firmware_bridge", "hil")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_loop(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The first loop of modules that import one another (``TYPE_CHECKING`` imports count: a
    loop there still means neither module can be read without the other); empty when none."""
    modules = {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }
    graph = {
        name: sorted(m for m in imports_of(path, root) if m in modules and m != name)
        for name, path in modules.items()
    }
    done: set[str] = set()

    def walk(name: str, trail: list[str]) -> list[str]:
        if name in trail:
            return [*trail[trail.index(name) :], name]
        if name in done:
            return []
        for imported in graph[name]:
            if loop := walk(imported, [*trail, name]):
                return loop
        done.add(name)
        return []

    for name in modules:
        if loop := walk(name, []):
            return loop
    return []


def test_no_modules_import_each_other() -> None:
    """A loop (like store.py and retention.py once were) means no module of it can be read,
    tested or moved on its own; give the lower one the values it needs instead."""
    loop = import_loop()
    assert loop == [], "import loop: " + " -> ".join(loop)


def test_a_loop_is_seen_even_under_type_checking(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "__init__.py").write_text("", encoding="utf-8")
    (store / "store.py").write_text("from store import retention\n", encoding="utf-8")
    (store / "retention.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from store.store import Store\n",
        encoding="utf-8",
    )
    assert import_loop(tmp_path, ("store",)) == [
        "store.retention",
        "store.store",
        "store.retention",
    ]
