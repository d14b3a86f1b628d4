"""A small Prometheus text-format registry (counters and gauges, with labels).

Gauges that describe stored state (outbox backlog, open sessions) are computed by
collectors at scrape time from the store, so they can never drift from the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _Family:
    kind: str  # counter or gauge
    help: str
    values: dict[Labels, float] = field(default_factory=dict)


class Metrics:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._collectors: list[Callable[[Metrics], None]] = []

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._families.setdefault(name, _Family(kind, help_text))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        family = self._family(name, "counter")
        key = tuple(sorted(labels.items()))
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._family(name, "gauge").values[tuple(sorted(labels.items()))] = value

    def add_collector(self, collector: Callable[[Metrics], None]) -> None:
        self._collectors.append(collector)

    def value(self, name: str, **labels: str) -> float | None:
        family = self._families.get(name)
        return family.values.get(tuple(sorted(labels.items()))) if family else None

    def render(self) -> str:
        for collect in self._collectors:
            collect(self)
        lines: list[str] = []
        for name, family in sorted(self._families.items()):
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.kind}")
            for labels, value in sorted(family.values.items()):
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}")
        return "\n".join(lines) + "\n"

    def _family(self, name: str, kind: str) -> _Family:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind, name.replace("_", " "))
        return family


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
