"""A process that only receives acquirer webhooks into a real store: killed by the test."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

from gateway.store import Store
from tests.acquirer.rig import Clock, receiver


async def main(path: Path) -> None:
    store = Store.open(path)
    root = web.Application()
    route = receiver(store, Clock()).mount(root)
    runner = web.AppRunner(root, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert isinstance(site._server, asyncio.Server)
    port = site._server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}{route}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
