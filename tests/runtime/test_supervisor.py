from __future__ import annotations

import asyncio

from gateway.runtime.supervisor import Supervisor


class Flaky:
    """Crashes on its first two runs, then serves until stopped."""

    def __init__(self) -> None:
        self.name = "flaky"
        self.runs = 0

    async def run(self, stopping: asyncio.Event) -> None:
        self.runs += 1
        if self.runs <= 2:
            raise RuntimeError(f"boom {self.runs}")
        await stopping.wait()


class Steady:
    def __init__(self) -> None:
        self.name = "steady"
        self.ticks = 0
        self.parked = False

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            self.ticks += 1
            await asyncio.sleep(0.005)
        self.parked = True  # finished its in-flight work before returning


class Stubborn:
    name = "stubborn"

    async def run(self, stopping: asyncio.Event) -> None:
        await asyncio.sleep(3600)  # ignores stopping: must be cancelled after the grace period


async def test_a_crashing_worker_is_restarted_while_others_keep_serving() -> None:
    flaky, steady = Flaky(), Steady()
    sup = Supervisor([flaky, steady], backoff_min=0.01, backoff_max=0.05)
    sup.start()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if flaky.runs >= 3 and sup.all_up():
            break
    assert flaky.runs == 3
    assert sup.status["flaky"].restarts == 2
    assert sup.status["flaky"].last_error == "RuntimeError: boom 2"
    assert sup.status["steady"].restarts == 0
    ticks = steady.ticks
    await asyncio.sleep(0.05)
    assert steady.ticks > ticks  # still serving
    await sup.stop(grace=1.0)
    assert steady.parked
    assert {s.state for s in sup.status.values()} == {"stopped"}


async def test_stop_cancels_a_worker_that_ignores_the_grace_period() -> None:
    sup = Supervisor([Stubborn()], backoff_min=0.01)
    sup.start()
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sup.stop(grace=0.1)
    assert loop.time() - started < 1.0
    assert sup.status["stubborn"].state == "stopped"


async def test_a_store_error_stops_the_daemon_with_its_exit_code(tmp_path: object) -> None:
    from pathlib import Path

    import pytest

    from gateway.errors import StoreFull
    from gateway.runtime.app import Daemon
    from gateway.settings import load_settings
    from tests.site_rig import write_config

    class DiskFull:
        name = "writer"

        async def run(self, stopping: asyncio.Event) -> None:
            raise StoreFull("/var/lib/evpay/evpay.sqlite3")

    assert isinstance(tmp_path, Path)
    daemon = Daemon(load_settings(write_config(tmp_path, port=0)), extra_workers=[DiskFull()])
    with pytest.raises(StoreFull) as info:
        await asyncio.wait_for(daemon.run(), 10)
    assert info.value.exit_code == 74 and "disk holding the database is full" in str(info.value)
    assert daemon.supervisor.status["writer"].restarts == 0  # not restarted in a loop


async def test_the_watchdog_starves_while_an_essential_part_is_down(tmp_path: object) -> None:
    """systemd then restarts the whole daemon: a half-broken gateway must not look alive."""
    from pathlib import Path

    from gateway.runtime.app import Daemon
    from gateway.runtime.sdnotify import Notifier
    from gateway.settings import load_settings
    from tests.site_rig import write_config

    class Recorder(Notifier):
        def __init__(self) -> None:
            super().__init__({"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "100000"})
            self.pings = 0

        @property
        def watchdog_interval(self) -> float | None:
            return 0.05

        def send(self, *fields: str, wait_s: float = 0.0) -> bool:
            self.pings += "WATCHDOG=1" in fields
            return True

    class BrokenEngine:
        name = "engine"  # essential: the payment engine

        async def run(self, stopping: asyncio.Event) -> None:
            raise RuntimeError("terminal driver bug")

    assert isinstance(tmp_path, Path)
    notifier = Recorder()
    daemon = Daemon(
        load_settings(write_config(tmp_path, port=0)),
        notifier=notifier,
        extra_workers=[BrokenEngine()],
    )
    task = asyncio.create_task(daemon.run())
    await asyncio.sleep(0.6)
    assert daemon.supervisor.status["engine"].state != "up"
    assert notifier.pings == 0  # never fed while the engine is down
    daemon.request_stop("test over")
    await task
