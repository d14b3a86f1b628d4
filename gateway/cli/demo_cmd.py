"""``evpay demo``: the embedded site, run by the daemon's own code, end to end.

It starts the real Daemon (store, supervisor, local API) on the embedded demo config in a
temporary directory, exercises it through its own interfaces and prints what happened.
What it can show grows with the project: today the daemon's lifecycle, store and API.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from importlib import resources
from pathlib import Path

import aiohttp

from gateway.runtime import logs
from gateway.runtime.app import Daemon
from gateway.settings import Settings, parse_settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run the embedded demo site end to end")
    demo.add_argument("--seconds", type=float, default=1.0, help="how long to keep the site running")
    demo.add_argument("--verbose", action="store_true", help="show the daemon's log lines")
    demo.set_defaults(handler=_demo)


def demo_settings(workdir: Path) -> Settings:
    text = resources.files("gateway.demo").joinpath("demo.toml").read_text(encoding="utf-8")
    settings = parse_settings(text, "<embedded demo.toml>")
    storage = settings.storage.model_copy(update={"path": workdir / "evpay.sqlite3"})
    api = settings.api.model_copy(update={"port": 0})  # any free port: never clash with a live daemon
    return settings.model_copy(update={"storage": storage, "api": api})


def _demo(args: argparse.Namespace) -> int:
    logs.configure("info" if args.verbose else "warning")
    with tempfile.TemporaryDirectory(prefix="evpay-demo-") as tmp:
        return asyncio.run(_run(demo_settings(Path(tmp)), args.seconds))


async def _run(settings: Settings, seconds: float) -> int:
    daemon = Daemon(settings)
    print(f"demo: site {settings.site.id}, database {settings.storage.path}")
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        await daemon.ready.wait()
    base = f"http://{settings.api.host}:{daemon.api.bound_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as r:
            health = await r.json()
        async with http.get(f"{base}/status") as r:
            status = await r.json()
        print(f"demo: daemon ready on {base}: health {health['status']}")
        for w in status["workers"]:
            print(f"demo:   worker {w['name']} {w['state']}")
        print(f"demo:   open sessions {status['open_sessions']}, outbox pending {status['outbox']['pending']}")
        await asyncio.sleep(seconds)
        async with http.get(f"{base}/metrics") as r:
            metric_lines = sum(1 for line in (await r.text()).splitlines() if not line.startswith("#"))
        print(f"demo:   /metrics serves {metric_lines} samples")
    daemon.request_stop("demo finished")
    code = await task
    print(f"demo: daemon stopped cleanly (exit {code})")
    return code
