"""Small shared test helpers (real files, real ports, real subprocesses)."""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, *, port: int | None = None, extra: str = "") -> Path:
    path = directory / "gateway.toml"
    path.write_text(
        f"""
[site]
id = "TEST-SITE"
name = "test site"
country = "DE"

[storage]
path = "{directory / "evpay.sqlite3"}"

[api]
host = "127.0.0.1"
port = {port if port is not None else free_port()}

[daemon]
shutdown_grace_s = 3.0
{extra}
""",
        encoding="utf-8",
    )
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def site_toml(
    db: Path,
    terminals: dict[str, str],
    *,
    site: str = "TEST",
    evses: dict[str, str] | None = None,
    charger: str = 'mode = "simulated"',
    api: str = "",
    pricing: str = "",
    tariff_price: str = "0.50",
    vat: str | None = "19",
    extra: str = "",
    terminal_extra: str = "",
) -> str:
    """A whole site's config for daemon tests: the terminals (id -> device URL, password
    123456), the charger with its EVSEs (id -> terminal; default E1 on the first terminal), a
    one-component energy tariff "T" at ``tariff_price`` (+ ``vat`` %), the API on port 0;
    ``api``, ``charger``, ``pricing`` and ``terminal_extra`` (each terminal) add keys to their
    sections, ``extra`` adds sections."""
    blocks = "".join(
        f'[[terminals]]\nid = "{t}"\ndevice = "{d}"\npassword = {{ value = "123456" }}\n{terminal_extra}'
        for t, d in terminals.items()
    )
    evse_blocks = "".join(
        f'[[charger.evses]]\nid = "{e}"\nterminal = "{t}"\n'
        for e, t in (evses if evses is not None else {"E1": next(iter(terminals))}).items()
    )
    tax = f', vat = "{vat}"' if vat is not None else ""
    return f"""
[site]
id = "{site}"
country = "DE"
[storage]
path = "{db}"
[api]
port = 0
{api}
{blocks}
[charger]
enabled = true
{charger}
{evse_blocks}
[pricing]
default_tariff = "T"
{pricing}
tariffs = [ {{ id = "T", currency = "EUR", elements = [
  {{ price_components = [ {{ type = "ENERGY", price = "{tariff_price}"{tax}, step_size = 1 }} ] }} ] }} ]
{extra}
"""


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
