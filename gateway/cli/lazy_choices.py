"""Choices an argument takes from a module that is slow to import (a simulator, the terminal
registry): read when argparse first checks a value or prints that command's help, not while
the parser is built, so ``evpay`` starts without importing what another command runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator


class _Choices:
    def __init__(self, source: str) -> None:
        self._source = source
        self._values: tuple[str, ...] | None = None

    def _load(self) -> tuple[str, ...]:
        if self._values is None:
            module, _, name = self._source.partition(":")
            found = getattr(importlib.import_module(module), name)
            self._values = tuple(found() if callable(found) else found)
        return self._values

    def __contains__(self, value: object) -> bool:
        return value in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())


def choices_from(action: argparse.Action, source: str) -> None:
    """Give ``action`` the choices ``source`` ("module:NAME", or "module:function" returning
    them) holds. Set after ``add_argument``: argparse formats an argument's choices as it is
    added, which would import ``module`` at once."""
    action.choices = _Choices(source)
