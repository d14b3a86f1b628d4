"""How the benches measure: rates from interleaved rounds, the median kept.

Running a figure and its anchor in alternating short rounds, then taking each one's median,
cancels most of what a shared 2-core machine does to one long run (another process, a CPU
frequency step, the page cache): both sides see the same disturbances.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def rate(fn: Callable[[], object], seconds: float, per_call: int = 1) -> float:
    """Calls of ``fn`` per second (times ``per_call``) over about ``seconds``."""
    n, start = 0, time.perf_counter()
    batch = 1
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n * per_call / elapsed
        batch = min(batch * 2, 1000)


def interleaved(
    fns: dict[str, tuple[Callable[[], object], int]], seconds: float, rounds: int = 5
) -> dict[str, float]:
    """The median rate of each of ``fns`` (name -> (fn, items per call)), measured in turns."""
    seen: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, per_call) in fns.items():
            seen[name].append(rate(fn, seconds / rounds, per_call))
    return {name: statistics.median(values) for name, values in seen.items()}


def median_of(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        info = []
    names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = f"{names[0]} x{len(names)}" if names else cpu
    return (
        f"{platform.node()}: {cpu}, Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}"
    )
