"""Every queue has a named bound: an asyncio queue is built with ``maxsize`` set to a named
constant (never left unbounded, never a bare number), and a deque given a ``maxlen`` names it
too. The name is where the bound is explained and where the behaviour when it is hit is found.
Read from the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGES = ("gateway", "drivers", "firmware_bridge", "hil")
QUEUES = {"Queue", "LifoQueue", "PriorityQueue"}


def _name_of(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _called(node: ast.Call) -> str:
    return _name_of(node.func)


def _named(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Name | ast.Attribute)


def unnamed_bounds(path: Path, root: Path = REPO) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"{path.relative_to(root)}:{node.lineno}"
        if _called(node) in QUEUES:
            bound = keywords.get("maxsize", node.args[0] if node.args else None)
            if not _named(bound):
                found.append(f"{where}: {_called(node)}() without a named maxsize")
        elif _called(node) == "deque" and "maxlen" in keywords and not _named(keywords["maxlen"]):
            found.append(f"{where}: deque() with a bare maxlen")
        for name, value in keywords.items():  # field(default_factory=asyncio.Queue): unbounded
            if _named(value) and _name_of(value) in QUEUES:
                found.append(f"{where}: {name}={_name_of(value)} builds an unbounded queue")
    return found


def test_every_queue_has_a_named_bound() -> None:
    found = [
        offence
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for offence in unnamed_bounds(path)
    ]
    assert found == []


def test_the_reader_sees_unbounded_and_bare_bounds(tmp_path: Path) -> None:
    source = tmp_path / "queues.py"
    source.write_text(
        "import asyncio\nfrom collections import deque\nLIMIT = 8\n"
        "a = asyncio.Queue()\nb = asyncio.Queue(100)\nc = asyncio.Queue(maxsize=LIMIT)\n"
        "d = deque(maxlen=5)\ne = deque(maxlen=LIMIT)\nf = deque()\n"
        "g = field(default_factory=asyncio.Queue)\n",
        encoding="utf-8",
    )
    assert unnamed_bounds(source, tmp_path) == [
        "queues.py:4: Queue() without a named maxsize",
        "queues.py:5: Queue() without a named maxsize",
        "queues.py:7: deque() with a bare maxlen",
        "queues.py:10: default_factory=Queue builds an unbounded queue",
    ]
