"""Small shared test helpers (real files, real ports, real subprocesses)."""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.runtime.app import Daemon

REPO = Path(__file__).resolve().parent.parent
EVPAY = [sys.executable, "-m", "gateway.cli"]


def imports_of(path: Path, root: Path = REPO) -> set[str]:
    """Every module ``path`` imports, read from the source with ``ast`` (not by importing it), so
    an import inside a function or under ``TYPE_CHECKING`` counts too. ``from a import b`` names
    ``a.b`` when that is a module under ``root`` (the repository), else ``a``; a relative import
    is resolved against the package of a file that lies under ``root``."""

    def is_module(name: str) -> bool:
        where = root.joinpath(*name.split("."))
        return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()

    inside = path.is_relative_to(root)
    package = list(path.relative_to(root).parts[:-1]) if inside else []  # a/b/c.py: a.b
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}" if base else alias.name
                found.add(name if is_module(name) else base)
    found.discard("")
    return found


async def until(condition: Callable[[], object], timeout: float = 10) -> None:
    """Poll ``condition`` every 20 ms until it is true; TimeoutError after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@asynccontextmanager
async def pty_terminal(config: SimConfig) -> AsyncIterator[tuple[SimTerminal, str]]:
    """The terminal simulator on a real pty: (the simulator, its device path)."""
    port = PtyPort()
    sim = SimTerminal(config)
    serving = asyncio.create_task(sim.serve_line(port))
    try:
        yield sim, port.slave_path
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await port.close()


@asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[Daemon]:
    """The daemon running for the block, stopped gracefully after it (whatever happened)."""
    task = asyncio.create_task(daemon.run())
    try:
        yield daemon
    finally:
        daemon.request_stop("test over")
        await task


# How long a command may take before a test calls it hung: it catches a hang or a blow-up on
# hostile input, not a slow machine (a CLI start under a loaded 2-core machine took over 10 s).
HANG_GUARD_S = 60
