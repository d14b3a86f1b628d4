"""The /metrics page of a running daemon parses with Prometheus' own text parser, and its
payment, terminal and upstream figures move when their events happen."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.sim.terminal import SimConfig
from gateway.runtime.app import Daemon
from gateway.runtime.charger import EvsePlan, SimulatedCharger
from gateway.settings import parse_settings
from gateway.store import Store
from tests.helpers import REPO, pty_terminal, running
from tests.site_rig import site_toml


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_the_figures_move_with_a_paid_session(tmp_path: Path) -> None:
    charger = SimulatedCharger(["E1"])
    async with pty_terminal(SimConfig(password="123456", card_wait_s=0.05)) as (_sim, pty):
        devices = {"t1": f"serial://{pty}", "t2": f"serial://{tmp_path / 'gone'}"}
        text = site_toml(tmp_path / "m.sqlite3", devices, site="M", vat=None)
        async with (
            running(Daemon(parse_settings(text, "<metrics>"), charger=charger)) as daemon,
            asyncio.timeout(30),
        ):
            await daemon.ready.wait()
            api = daemon.api.bound_port
            assert api is not None
            before = await asyncio.to_thread(scrape, api)
            charger.plug_in("E1", EvsePlan(energy_wh=4_000, step_wh=1_000, meter_interval_s=0.3))
            while not (rows := daemon.store.sessions()) or rows[0]["state"] != "charging":
                await asyncio.sleep(0.05)
            during = await asyncio.to_thread(scrape, api)
            while not daemon.store.sessions()[0]["final"]:
                await asyncio.sleep(0.05)
            captured_count = ("evpay_terminal_command_seconds_count", (("operation", "capture"),))
            # the capture's latency is observed when its command returns, just after its stored result
            while captured_count not in (after := await asyncio.to_thread(scrape, api)):
                await asyncio.sleep(0.05)
    await charger.close()
    completed = ("evpay_sessions_final_total", (("state", "completed"),))
    assert before.get(completed, 0) == 0 and after[completed] == 1
    assert during[("evpay_holds_open", ())] == 1 and after[("evpay_holds_open", ())] == 0
    assert during[("evpay_hold_oldest_age_seconds", ())] > 0
    held = ("evpay_money_minor_total", (("currency", "EUR"), ("kind", "preauth")))
    captured = ("evpay_money_minor_total", (("currency", "EUR"), ("kind", "capture")))
    assert held not in before and after[held] == 5000 and after[captured] == 200
    assert after[("evpay_terminal_up", (("terminal", "t1"),))] == 1
    assert after[("evpay_terminal_up", (("terminal", "t2"),))] == 0  # its device is gone
    count = ("evpay_terminal_command_seconds_count", (("operation", "preauthorize"),))
    assert before.get(count, 0) == 0 and after[count] == 1
    assert after[("evpay_terminal_command_seconds_count", (("operation", "capture"),))] == 1
    assert after[("evpay_outbox_dead", ())] == 0


def test_the_alert_rules_name_metrics_the_page_has() -> None:
    lines = (REPO / "config" / "alerts.yml").read_text(encoding="utf-8").splitlines()
    exprs = " ".join(line.split("expr:", 1)[1] for line in lines if "expr:" in line)
    for name in (
        "evpay_hold_oldest_age_seconds",
        "evpay_outbox_dead",
        "evpay_owed_minor",
        "evpay_terminal_up",
    ):
        assert name in exprs


async def test_a_scrape_runs_the_money_queries_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The money figures aggregate every stored session and payment: run on the event loop they
    would hold up every terminal result and charger message for as long as they take. A scrape
    runs them in a worker thread, on a read-only connection of its own."""
    real = Store.money_figures
    threads: list[int] = []

    def watched(store: Store) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return real(store)

    monkeypatch.setattr(Store, "money_figures", watched)
    text = site_toml(tmp_path / "t.sqlite3", {"t1": f"serial://{tmp_path / 'gone'}"}, vat=None)
    async with running(Daemon(parse_settings(text, "<thread>"))) as daemon, asyncio.timeout(30):
        await daemon.ready.wait()
        api = daemon.api.bound_port
        assert api is not None
        page = await asyncio.to_thread(scrape, api)
    assert threads and threading.get_ident() not in threads  # never the loop's thread
    assert page[("evpay_holds_open", ())] == 0  # and the figures still reach the page
