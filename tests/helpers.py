"""Small shared test helpers (real files, real ports, real subprocesses)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EVPAY = [sys.executable, "-m", "gateway.cli"]


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
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env
