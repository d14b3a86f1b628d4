"""Every path the README and the docs name exists: a map that drifted from the code misleads the
next engineer more than no map at all.

What counts as a named path:
- any word containing ``/`` whose first part is a top-level entry of the repository
  (``gateway/payments/states.py``, ``tests/campaigns/``, ``.ci/run``), in prose or code;
- a bare Python file name in backticks (``session.py``): some file of the repository has it;
- the module of ``python -m x.y`` when ``x`` is one of our packages;
- the folder trees (a plain fenced block whose first line is ``name/`` and a description): each
  row, each child row (two spaces in: under the last top row), and the ``*.py`` names and
  ``folder/`` words of a row's description (in that row's folder).

``{x}``, ``<x>``, ``…`` and ``NNNN`` in a path stand for any name. When a module is renamed or
moved, this test names the doc and line that still point at the old place: mend the doc.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCS = (
    "README.md",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
    "firmware_bridge/README.md",
    "hil/README.md",
)
PACKAGES = ("gateway", "drivers", "firmware_bridge", "hil", "tests", "bench")
_PLACEHOLDER = re.compile(r"\{[^}]*\}|<[^>]*>|…|NNNN")
_TREE_ROW = re.compile(r"[\w.-]+/ {2,}\S")


def roots(root: Path) -> set[str]:
    """The repository's top-level entries (hidden ones, like the venv, except ``.ci``)."""
    return {p.name for p in root.iterdir() if not p.name.startswith(".") or p.name == ".ci"}


def exists(root: Path, path: str) -> bool:
    """``path`` (or the module ``path``.py) is in the repository; ``**/name``: anywhere in it;
    ``file.py::test_name``: the file defines that test."""
    path, _, test = path.partition("::")
    if test:
        name = test.split("[")[0]
        return exists(root, path) and f"def {name}(" in (root / path).read_text(encoding="utf-8")
    pattern = _PLACEHOLDER.sub("*", path).rstrip("/")
    if pattern.startswith("**/"):
        folders = [root / name for name in roots(root) if (root / name).is_dir()]
        return any(next(folder.rglob(pattern[3:]), None) for folder in folders)
    if "*" in pattern:
        return any(root.glob(pattern))
    return (root / pattern).exists() or (root / f"{pattern}.py").exists()


def _words(line: str) -> Iterator[str]:
    for word in re.split(r"[\s`|]+", line):
        yield re.sub(r"^[(\[\"'*]+|[)\],;:.\"'*]+$", "", word)  # a leading dot stays: .ci/run


def paths_in_text(text: str, top: set[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        for word in _words(line):
            if "/" in word and word.split("/")[0] in top:
                yield number, word
        for quoted in re.findall(r"`([^`]+)`", line):
            if re.fullmatch(r"\w+\.py", quoted):
                yield number, f"**/{quoted}"
            for module in re.findall(r"-m ([\w.]+)", quoted):
                if module.split(".")[0] in PACKAGES:
                    yield number, module.replace(".", "/")


def paths_in_trees(text: str, top: set[str]) -> Iterator[tuple[int, str]]:
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        number += 1
        if lines[number - 1] != "```" or not _TREE_ROW.match(
            lines[number] if number < len(lines) else ""
        ):
            continue
        top_dir = here = ""
        while number < len(lines) and lines[number] != "```":
            line = lines[number]
            number += 1
            indent = len(line) - len(line.lstrip(" "))
            words = line.split()
            if indent == 0:  # one or more paths (each with a "/"), then the description
                count = next((i for i, w in enumerate(words) if "/" not in w), len(words)) or 1
                names, description = words[:count], " ".join(words[count:])
                yield from ((number, name) for name in names)
                top_dir = here = names[0] if names[0].endswith("/") else names[0].rpartition("/")[0]
            elif indent == 2:  # a name under the last top row, then the description
                child = f"{top_dir.rstrip('/')}/{words[0]}"
                description = " ".join(words[1:])
                yield number, child
                here = child if child.endswith("/") else child.rpartition("/")[0]
            else:
                description = line
            for word in re.findall(r"[\w.*/-]+", description):
                if word.split("/")[0] in top and "/" in word:
                    yield number, word
                elif re.fullmatch(r"\w+\.py|[\w.*-]+/([\w.*-]+/)*([\w*-]+\.\w+)?", word):
                    yield number, f"{here.rstrip('/')}/{word}"
        number += 1


def missing(root: Path, doc: str) -> list[str]:
    text = (root / doc).read_text(encoding="utf-8")
    top = roots(root)
    named = sorted({*paths_in_text(text, top), *paths_in_trees(text, top)})
    return [
        f"{doc}:{line} names {path!r}, which is not in the repository"
        for line, path in named
        if not exists(root, path)
    ]


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_doc_names_exists(doc: str) -> None:
    gone = missing(REPO, doc)
    assert gone == [], "a doc points at a path that moved or was renamed; mend it:\n" + "\n".join(
        gone
    )


def test_a_drifted_tree_and_a_stale_name_are_seen(tmp_path: Path) -> None:
    (tmp_path / "gateway" / "payments").mkdir(parents=True)
    (tmp_path / "gateway" / "payments" / "states.py").write_text("", encoding="utf-8")
    (tmp_path / "drivers").mkdir()
    (tmp_path / "drivers" / "money.py").write_text("", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "Read `gateway/payments/states.py`, `gateway/cli.py` and `session.py`;\n"
        "run `python -m gateway.payments.states`.\n\n"
        "```\n"
        "gateway/           the application\n"
        "gateway/acquirer/ one space: the name is as wide as the column\n"
        "drivers/           libraries\n"
        "  money.py         minor units\n"
        "  payments/        the engine: states.py, tariff.py\n"
        "```\n",
        encoding="utf-8",
    )
    assert missing(tmp_path, "README.md") == [
        "README.md:1 names '**/session.py', which is not in the repository",
        "README.md:1 names 'gateway/cli.py', which is not in the repository",
        "README.md:6 names 'gateway/acquirer/', which is not in the repository",
        "README.md:9 names 'drivers/payments/', which is not in the repository",
        "README.md:9 names 'drivers/payments/states.py', which is not in the repository",
        "README.md:9 names 'drivers/payments/tariff.py', which is not in the repository",
    ]
