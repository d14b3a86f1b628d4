"""The crash campaign's site: its two ZVT terminals, its config (EVSEs, routes, the CPO) and, for
the partition campaign, the outages."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from drivers.sim.ports import PtyPort, serve_tcp
from drivers.sim.terminal import SimConfig, SimTerminal
from tests.site_rig import site_toml, upstream_toml

if TYPE_CHECKING:
    from tests.campaigns.crash import Campaign


async def start_zvt_terminals(c: Campaign) -> dict[str, str]:
    """The ZVT terminals: ``t1`` on TCP, ``t2`` on a pty; their device URLs by id."""
    c.sims = {
        "t1": SimTerminal(
            SimConfig(
                password="123456",
                card_wait_s=0.05,
                echo="booked",
                extensions="new_receipt",
                state_path=c.dir / "t1.json",
                result_ack_timeout_s=2.0,
                on_result=c.approval_out.set,
                unacked_on_close="keep",
                on_end_of_day=c.nights.on_end_of_day("t1"),
            )
        ),
        "t2": SimTerminal(
            SimConfig(
                password="123456",
                card_wait_s=0.05,
                echo="reversed",
                extensions="same_receipt",
                state_path=c.dir / "t2.json",
                result_ack_timeout_s=2.0,
                on_result=c.approval_out.set,
                please_wait=c.PLEASE_WAIT,
                on_end_of_day=c.nights.on_end_of_day("t2"),
            )
        ),
    }
    c.tcp = await serve_tcp("127.0.0.1", 0, lambda p: c.sims["t1"].serve(p, serial=False))
    c.pty = PtyPort()
    c.pty_serving = asyncio.create_task(c._serve_pty())
    c.tty = c.dir / "tty-t2"  # as udev names a serial adapter: the campaigns may re-plug it
    c.tty.unlink(missing_ok=True)
    c.tty.symlink_to(c.pty.slave_path)
    tcp_port = c.tcp.sockets[0].getsockname()[1]
    return {"t1": f"tcp://127.0.0.1:{tcp_port}", "t2": f"serial://{c.tty}"}


def write_config(c: Campaign, devices: dict[str, str]) -> None:
    """The site's config: the terminals (``devices``), the EVSEs, their routes, the CPO."""
    upstream = upstream_toml(c.cpo)  # our OCPI server on a free loopback port
    routes = ""
    for terminal in (
        "t1",
        "t2",
    ):  # each EVSE stays on its terminal; a route never lists no EVSE (= all)
        for incremental in (True, False):
            evses = [
                e
                for e, t in c.terminal_of.items()
                if t == terminal and (e in c.incremental) == incremental
            ]
            if evses:
                routes += (
                    f'[[routes]]\nid = "{terminal}-{"topup" if incremental else "fixed"}"\n'
                    f'terminals = ["{terminal}"]\nevses = {json.dumps(evses)}\n'
                    + ('strategy = "incremental"\n' if incremental else "")
                )
    text = site_toml(
        c.dir / "evpay.sqlite3",
        devices,
        site="CRASH",
        evses=c.terminal_of,
        charger=c.broker.toml(),  # the gateway's user on the ACL'd broker
        pricing='fixed_hold = { EUR = "50.00" }\nhold_min = "1.00"\nincremental_initial = "1.00"\n'
        'incremental_step = "1.00"\nsafety_margin = "0.10"\n'
        "retry_max_s = 60",  # after 1,000 kills retries would wait 30 min; the end waits 180 s
        extra=c.terminal_sections() + upstream + routes,
        terminal_extra="incremental = true\n",
    )
    c.config = c.dir / "gateway.toml"
    c.config.write_text(text, encoding="utf-8")


async def partitions(c: Campaign, cuts: int, broker: bool) -> None:
    """Partitions instead of kills: the CPO unreachable (every request answered 503) or the
    MQTT broker gone, for a few seconds each; after each uplink cut, how long the backlog
    took to drain."""
    for i in range(cuts):
        await asyncio.sleep(c.rng.uniform(1.0, 3.0))
        outage = c.rng.uniform(2.0, 6.0)
        if i % 2 == 0 or not broker:
            c.cpo.state.down = True
            await asyncio.sleep(outage)
            c.cpo.state.down = False
            restored = time.perf_counter()
            async with asyncio.timeout(120):
                await c._quiet(sessions=False)
            c.figures.partitions.append(
                f"uplink cut {outage:.1f} s, backlog drained "
                f"{time.perf_counter() - restored:.1f} s after"
            )
        else:
            c.broker.stop()
            await asyncio.sleep(outage)
            c.broker.start()
            c.figures.partitions.append(f"MQTT broker gone {outage:.1f} s")
