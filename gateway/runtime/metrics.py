"""A small Prometheus text-format registry (counters and gauges, with labels).

Gauges that describe stored state (outbox backlog, open sessions, money) are computed at scrape
time from the store, so they can never drift from the truth. Such a *reader* runs in a worker
thread (``scrape``), never on the event loop: what it returns sets the figures on the loop.
Collectors (in-memory state only) run on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]


# Terminal commands take from tens of milliseconds (a status) to minutes (a card wait).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

Collector = Callable[["Metrics"], None]
Reader = Callable[[], Collector]  # blocking (the store): runs in a thread, returns a collector


@dataclass(slots=True)
class _Family:
    kind: str  # counter, gauge or histogram
    help: str
    values: dict[Labels, float] = field(default_factory=dict)
    observed: dict[Labels, list[float]] = field(
        default_factory=dict
    )  # histogram: per-bucket counts, sum, count


class Metrics:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._collectors: list[Collector] = []
        self._readers: list[Reader] = []
        # One scrape reads the store at a time: the others wait their turn on the loop (each is
        # an HTTP request the API already holds), and no more than one thread reads for them.
        self._reading = asyncio.Lock()

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._families.setdefault(name, _Family(kind, help_text))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        family = self._family(name, "counter")
        key = tuple(sorted(labels.items()))
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._family(name, "gauge").values[tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        family = self._family(name, "histogram")
        key = tuple(sorted(labels.items()))
        counts = family.observed.setdefault(key, [0.0] * (len(BUCKETS) + 2))
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                counts[i] += 1
        counts[-2] += value
        counts[-1] += 1

    def add_collector(self, collector: Collector) -> None:
        """In-memory figures, collected on the loop at every render."""
        self._collectors.append(collector)

    def add_reader(self, reader: Reader) -> None:
        """Figures read from the store: ``scrape`` runs ``reader`` in a worker thread."""
        self._readers.append(reader)

    async def scrape(self) -> str:
        """The page: the store's figures read off the loop (``asyncio.to_thread``), then set
        and rendered on it."""
        async with self._reading:
            for read in self._readers:
                collect = await asyncio.to_thread(read)
                collect(self)
            return self.render()

    def value(self, name: str, **labels: str) -> float | None:
        family = self._families.get(name)
        return family.values.get(tuple(sorted(labels.items()))) if family else None

    def render(self) -> str:
        """The page from what is in memory and the collectors (no store reads: see ``scrape``)."""
        for collect in self._collectors:
            collect(self)
        lines: list[str] = []
        for name, family in sorted(self._families.items()):
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.kind}")
            for labels, value in sorted(family.values.items()):
                lines.append(f"{name}{_labels(labels)} {value:g}")
            for labels, counts in sorted(family.observed.items()):
                bounds = [f"{b:g}" for b in BUCKETS] + ["+Inf"]
                for bound, n in zip(bounds, (*counts[: len(BUCKETS)], counts[-1]), strict=True):
                    lines.append(f"{name}_bucket{_labels((*labels, ('le', bound)))} {n:g}")
                lines.append(f"{name}_sum{_labels(labels)} {counts[-2]:g}")
                lines.append(f"{name}_count{_labels(labels)} {counts[-1]:g}")
        return "\n".join(lines) + "\n"

    def _family(self, name: str, kind: str) -> _Family:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind, name.replace("_", " "))
        return family


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}" if labels else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
