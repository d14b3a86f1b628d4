"""The kiosk API as an attacker on the site network would try it, over real loopback HTTP with
the real daemon and a simulated terminal on a pty: who may pay, from where, how often, and
what happens when the terminal is away."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.sim.ports import PtyPort
from drivers.sim.terminal import SimConfig, SimTerminal
from gateway.errors import ConfigError
from gateway.payments.charger import ChargeStarted, PaymentRequested
from gateway.runtime.app import Daemon
from gateway.runtime.charger import SimulatedCharger
from gateway.runtime.engine_worker import ENGINE_QUEUE_MAX
from gateway.settings import parse_settings
from tests.helpers import free_port
from tests.site_rig import site_toml

KIOSK_TOKEN = "kiosk-token-0123456789abcdef"


def config(db: Path, device: str, start_paths: str = "") -> str:
    """The site: one terminal, E1, a kiosk client allowed from http://kiosk.local."""
    token_hash = hashlib.sha256(KIOSK_TOKEN.encode()).hexdigest()
    api = f'allowed_origins = ["http://kiosk.local"]\n[[api.clients]]\nid = "kiosk-1"\ntoken_sha256 = "{token_hash}"'
    return site_toml(
        db, {"t1": device}, site="SEC", api=api, charger=f'mode = "simulated"\n{start_paths}'
    )


class Site:
    def __init__(self, daemon: Daemon, task: asyncio.Task[int]) -> None:
        self.daemon, self.task = daemon, task

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.api.bound_port}/evses/E1/pay"


@pytest.fixture
async def site(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    port = PtyPort()
    sim = SimTerminal(
        SimConfig(password="123456", card_wait_s=5.0)
    )  # the driver takes a while at the card
    serving = asyncio.create_task(sim.serve_line(port))
    device = f"serial://{port.slave_path}"
    if getattr(request, "param", "") == "terminal-down":
        device = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    text = config(tmp_path / "s.sqlite3", device)
    daemon = Daemon(parse_settings(text, "<sec>"), charger=SimulatedCharger(["E1"]))
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        await daemon.ready.wait()
        while daemon.engine is None or "t1" not in daemon.engine.status.terminal_state:
            await asyncio.sleep(0.05)
    yield Site(daemon, task)
    daemon.request_stop("test over")
    await task
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await port.close()


def kiosk(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KIOSK_TOKEN}", **extra}


async def post(
    url: str, headers: dict[str, str], body: Any = None, data: bytes | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, headers=headers, json=body, data=data) as r,
    ):
        return r.status, await r.json()


async def test_only_a_client_with_its_token_may_pay(site: Site) -> None:
    assert (await post(site.url, {}, {}))[0] == 401
    assert (await post(site.url, {"Authorization": "Bearer wrong"}, {}))[0] == 401
    status, answer = await post(site.url, kiosk(), {})
    assert (
        status == 202
        and answer["session"]
        and site.daemon.store.session(answer["session"]) is not None
    )


async def test_a_browser_page_cannot_drive_it(site: Site) -> None:
    status, answer = await post(site.url, kiosk(Origin="http://evil.example"), {})
    assert status == 403 and "origin" in answer["error"]
    status, _ = await post(
        site.url, kiosk(**{"Content-Type": "text/plain"}), data=b"{}"
    )  # a "simple" request
    assert status == 415
    assert site.daemon.store.sessions() == []
    assert (await post(site.url, kiosk(Origin="http://kiosk.local"), {}))[0] == 202


async def test_a_double_tap_makes_one_session(site: Site) -> None:
    first, second = await asyncio.gather(post(site.url, kiosk(), {}), post(site.url, kiosk(), {}))
    statuses = sorted([first[0], second[0]])
    assert statuses == [202, 409]
    winner = first if first[0] == 202 else second
    loser = second if winner is first else first
    assert loser[1]["session"] == winner[1]["session"]  # 409 names the open session
    assert len(site.daemon.store.sessions()) == 1


async def test_the_same_idempotency_key_gets_the_same_answer(site: Site) -> None:
    a = await post(site.url, kiosk(**{"Idempotency-Key": "tap-42"}), {})
    b = await post(site.url, kiosk(**{"Idempotency-Key": "tap-42"}), {})
    assert a[0] == b[0] == 202 and a[1]["session"] == b[1]["session"]
    assert len(site.daemon.store.sessions()) == 1


@pytest.mark.parametrize("site", ["terminal-down"], indirect=True)
async def test_pay_while_the_terminal_is_down_is_refused_and_nothing_runs_later(site: Site) -> None:
    status, answer = await post(site.url, kiosk(), {})
    assert status == 503 and "terminal t1 unavailable" in answer["error"]
    await asyncio.sleep(1.0)
    assert site.daemon.store.sessions() == []  # nothing parked in memory to run later
    async with (
        aiohttp.ClientSession() as http,
        http.get(site.url.replace("/evses/E1/pay", "/health")) as r,
    ):
        assert "t1" in (await r.json()).get("terminals", {})


def test_config_refuses_a_network_bind_without_authentication() -> None:
    with pytest.raises(ConfigError, match="reachable from the network"):
        parse_settings('[site]\nid = "S"\ncountry = "DE"\n[api]\nhost = "0.0.0.0"\n', "<t>")
    ok = parse_settings(
        '[site]\nid = "S"\ncountry = "DE"\n[api]\nhost = "0.0.0.0"\n[[api.clients]]\nid = "k"\n'
        f'token_sha256 = "{"a" * 64}"\n',
        "<t>",
    )
    assert ok.api.clients[0].id == "k"


async def test_the_kiosk_body_is_validated_and_carries_the_target(site: Site) -> None:
    for body in (
        {"target": {"kwh": 20.5}},
        {"target": {"kwh": "-1"}},
        {"surprise": 1},
        {"target": {"amount_minor": 1.5}},
        [1],
        {"target": {"kwh": "NaN"}},
        {"target": {"kwh": "sNaN"}},
    ):
        status, answer = await post(site.url, kiosk(), body)
        assert status == 400 and "invalid body" in answer["error"], body
    assert site.daemon.store.sessions() == []
    status, answer = await post(site.url, kiosk(), {"target": {"kwh": "20"}})
    assert status == 202


async def test_start_paths_are_per_site(tmp_path: Path) -> None:
    """A site whose sessions start only at the charger refuses the kiosk, and the other way round."""
    port = PtyPort()
    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.05))
    serving = asyncio.create_task(sim.serve_line(port))
    for paths, kiosk_status in ((["plug"], 403), (["kiosk"], 202)):
        start_paths = f"start_paths = {paths}".replace("'", '"')
        text = config(tmp_path / f"{paths[0]}.sqlite3", f"serial://{port.slave_path}", start_paths)
        daemon = Daemon(parse_settings(text, "<paths>"), charger=SimulatedCharger(["E1"]))
        task = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(10):
                await daemon.ready.wait()
            assert daemon.engine is not None
            daemon.engine.on_charger_event(PaymentRequested(evse="E1"))  # the charger asks
            plug_sessions = len(
                [r for r in daemon.store.sessions() if not r["id"].startswith("orphan")]
            )
            status, _ = await post(
                f"http://127.0.0.1:{daemon.api.bound_port}/evses/E1/pay", kiosk(), {}
            )
            assert status == kiosk_status
            assert plug_sessions == (1 if "plug" in paths else 0)
        finally:
            daemon.request_stop("test over")
            await task
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await port.close()


def test_a_refusal_leaves_the_terminal_available_only_unreachability_does_not() -> None:
    from drivers.base import Outcome, TerminalResult
    from gateway.payments.routing import Health
    from gateway.runtime.terminal_runner import Board, note_result

    board: Board = {}
    health = Health()
    note_result(
        board,
        health,
        "t1",
        TerminalResult("add_hold", Outcome.ERROR, "terminal t1 cannot add to a hold"),
    )
    assert board["t1"] == (True, "ok")  # a refusal: the terminal is there
    note_result(
        board,
        health,
        "t1",
        TerminalResult("capture", Outcome.UNKNOWN, "connection lost: reset", unreachable=True),
    )
    assert board["t1"] == (False, "connection lost: reset")
    note_result(board, health, "t1", TerminalResult("register", Outcome.ERROR, "wrong password"))
    assert board["t1"][0] is False  # not registered: no payments through it


async def test_a_full_engine_queue_refuses_a_pay_request_with_503_and_the_reason(
    site: Site,
) -> None:
    engine = site.daemon.engine
    assert engine is not None
    engine.queue_max = 0  # every input from outside now finds the queue full
    status, answer = await post(site.url, kiosk(), {})
    assert status == 503 and "event queue is full" in answer["error"]
    assert site.daemon.store.sessions() == []  # refused: nothing stored, nothing waits
    engine.queue_max = ENGINE_QUEUE_MAX
    assert (await post(site.url, kiosk(), {}))[0] == 202


async def test_a_charger_message_the_full_queue_refuses_is_not_acknowledged(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused, said in the log, and left unacknowledged: a link that holds back its
    acknowledgement (MQTT) leaves the message with the broker instead of losing it."""
    engine = site.daemon.engine
    assert engine is not None
    acknowledged: list[str] = []
    engine.queue_max = 0
    engine.on_charger_event(
        ChargeStarted(evse="E1", session_id="s1", done=lambda: acknowledged.append("first"))
    )
    engine.on_charger_event(PaymentRequested(evse="E1", done=lambda: acknowledged.append("pay")))
    assert acknowledged == [] and "engine.queue_full" in caplog.text
    assert site.daemon.store.sessions() == []
    engine.queue_max = ENGINE_QUEUE_MAX
    engine.on_charger_event(
        ChargeStarted(evse="E1", session_id="s1", done=lambda: acknowledged.append("again"))
    )
    async with asyncio.timeout(5):
        while not acknowledged:
            await asyncio.sleep(0.01)
    assert acknowledged == ["again"]


async def test_a_command_beyond_the_terminals_bound_is_not_sent_and_its_session_hears_busy(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from drivers.base import Outcome
    from drivers.transport.serial import SerialTransport
    from drivers.transport.url import SerialUrl
    from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
    from gateway.payments import commands as c
    from gateway.payments import events as e
    from gateway.payments.routing import Health
    from gateway.runtime.engine_host import EngineHost
    from gateway.runtime.terminal_runner import COMMANDS_WAITING_MAX, TerminalRunner
    from gateway.store import Store
    from tests.payments.fixtures import policy

    store = Store.open(tmp_path / "bound.sqlite3")
    host = EngineHost(store, policy(), lambda: datetime.now(UTC))
    heard: list[e.Event] = []
    runner = TerminalRunner(
        name="t1",
        # nothing answers there: a command that was sent would come back UNKNOWN, not BUSY
        terminal=ZvtTerminal(
            "t1",
            SerialTransport(SerialUrl(str(tmp_path / "no-tty"))),
            serial_framing=True,
            options=ZvtOptions(password="123456"),
        ),
        host=host,
        board={"t1": (True, "ok")},
        health=Health(),
        take=heard.append,
        process=host.handle,
        dispatch=lambda _: None,
        currency="EUR",
    )
    runner._commands = COMMANDS_WAITING_MAX  # as many as the bound already wait
    await runner.execute(
        c.Release(
            key="s1:release",
            session_id="s1",
            terminal="t1",
            ref="17",
            held_minor=5000,
            currency="EUR",
        )
    )
    await runner.execute(c.QueryOpenPreauths("s2:ask", "s2", "t1"))
    (release, ask) = heard
    assert isinstance(release, e.TerminalResultArrived) and release.outcome is Outcome.BUSY
    assert "not sent" in release.message
    assert isinstance(ask, e.OpenPreauthsReported) and ask.failed and ask.busy
    assert runner.board["t1"] == (True, "ok")  # the terminal did nothing wrong
    store.close()
