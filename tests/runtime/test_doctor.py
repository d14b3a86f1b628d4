"""``evpay doctor``: each check passing and failing, on real files, a real pty terminal, a real
daemon, and a stand-in ``timedatectl`` on the PATH for the clock."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.sim.terminal import SimConfig
from gateway.cli.doctor_broker import Check, broker_access, broker_persistence
from gateway.cli.doctor_cmd import run_checks
from gateway.runtime.app import Daemon
from gateway.runtime.charger import SimulatedCharger
from gateway.settings import parse_settings
from gateway.store import JournalEntry, OutboxMessage, Step, Store
from tests.helpers import EVPAY, free_port, pty_terminal, running, subprocess_env
from tests.site_rig import site_toml


def site(tmp_path: Path, device: str, extra: str = "", port: int | None = None) -> Path:
    """A site of one terminal ``t1`` at ``device``, no charger unless ``extra`` adds one."""
    config = tmp_path / "site.toml"
    text = site_toml(
        tmp_path / "evpay.sqlite3",
        {"t1": device},
        site="DOC",
        api_port=port or free_port(),
        charger=None,
        tariffs=(),
        extra=extra,
    )
    config.write_text(text, encoding="utf-8")
    return config


CHARGER = (
    '[charger]\nenabled = true\nmode = "simulated"\n[[charger.evses]]\nid = "E1"\nterminal = "t1"'
    '\nfree_vend_kwh = "1"'  # every EVSE is priced or explicitly free (issue 26, item 13)
)


def by_name(checks: list[Check]) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in checks}


@pytest.fixture
async def terminal() -> AsyncIterator[str]:
    async with pty_terminal(SimConfig(password="123456")) as (_sim, pty):
        yield f"serial://{pty}"


async def test_a_site_without_its_daemon(tmp_path: Path, terminal: str) -> None:
    config = site(tmp_path, terminal)
    found = by_name(await asyncio.to_thread(run_checks, config))
    assert found["config"][0] == "pass"
    assert found["daemon"][0] == "fail" and "is evpay.service running?" in found["daemon"][1]
    assert found["terminal t1"] == (
        "pass",
        "answers a status enquiry (EVPAY-SIM-1.0)",
    )  # asked directly
    assert found["database"][0] == "fail" and "no database yet" in found["database"][1]
    assert found["charger link"][0] == "skip" and found["CPO"][0] == "skip"
    missing = by_name(run_checks(site(tmp_path, f"serial://{tmp_path / 'gone'}", CHARGER)))
    assert missing["terminal t1"][0] == "fail" and "does not exist" in missing["terminal t1"][1]
    assert missing["charger link"] == ("fail", "the daemon is not running: no charger link")


def test_a_secret_that_cannot_be_read_fails_the_config(tmp_path: Path) -> None:
    config = site(
        tmp_path,
        f"serial://{tmp_path / 'gone'}",
        f'[journal]\nsigning_key = {{ file = "{tmp_path / "no-key.pem"}" }}',
    )
    found = by_name(run_checks(config))
    assert found["config"][0] == "fail" and "journal.signing_key" in found["config"][1]
    assert "terminal t1" in found  # the rest is still checked


def test_the_database_the_journal_the_outbox_and_the_disk(tmp_path: Path) -> None:
    upstream = (
        '[upstream]\nenabled = true\nversions_url = "https://cpo.example/ocpi/versions"\n'
        'token_a = { value = "token-a" }\nkey = { value = "' + "A" * 43 + '=" }'
    )
    config = site(tmp_path, f"serial://{tmp_path / 'gone'}", upstream)
    clock = [datetime.now(UTC) - timedelta(hours=3)]
    store = Store.open(tmp_path / "evpay.sqlite3", clock=lambda: clock[0])
    for n in range(3):
        store.apply(Step(f"s{n}", journal=[JournalEntry("session", "s", "x", {"n": n})]))
    store.close()
    found = by_name(run_checks(config))
    assert found["database"][0] == "pass" and found["journal"] == (
        "pass",
        "3 rows intact, proven to row 0, 3 newest not yet signed",
    )
    assert found["outbox"][0] == "pass" and found["CPO"][0] == "fail"  # never registered
    store = Store.open(tmp_path / "evpay.sqlite3")
    store.set_upstream_status(False, "the CPO refused: website is required")
    store.close()
    assert by_name(run_checks(config))["CPO"] == (
        "fail",
        "not registered: the CPO refused: website is required",
    )
    store = Store.open(tmp_path / "evpay.sqlite3")
    store.set_upstream_status(True, "registered")
    store.close()
    assert by_name(run_checks(config))["CPO"][0] == "pass"
    assert by_name(run_checks(config, min_free_mb=10**9))["disk"][0] == "fail"

    store = Store.open(tmp_path / "evpay.sqlite3", clock=lambda: clock[0])
    store.apply(
        Step(
            "old", outbox=[OutboxMessage("m1", "session:s", "session.outcome", {"session_id": "s"})]
        )
    )
    store.close()
    outbox = by_name(run_checks(config))["outbox"]
    assert outbox[0] == "fail" and "oldest 180 min" in outbox[1]

    conn = sqlite3.connect(tmp_path / "evpay.sqlite3")
    conn.execute("DROP TRIGGER journal_no_delete")
    conn.execute("DELETE FROM journal WHERE seq = 2")
    conn.commit()
    conn.close()
    journal = by_name(run_checks(config))["journal"]
    assert journal[0] == "fail" and "row 2 is missing (deleted)" in journal[1]

    raw = (tmp_path / "evpay.sqlite3").read_bytes()
    (tmp_path / "evpay.sqlite3").write_bytes(
        raw[:100] + b"\xff" * 4000 + raw[4100:]
    )  # a damaged page
    damaged = by_name(run_checks(config))["database"]
    assert damaged[0] == "fail"


@pytest.mark.parametrize(("answer", "status"), [("yes", "pass"), ("no", "fail")])
def test_the_clock(tmp_path: Path, answer: str, status: str) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "timedatectl").write_text(f"#!/bin/sh\necho {answer}\n", encoding="utf-8")
    (fake / "timedatectl").chmod(0o755)
    config = site(tmp_path, f"serial://{tmp_path / 'gone'}")
    env = {**subprocess_env(), "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        [*EVPAY, "doctor", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1  # the daemon is not running here
    clock = next(c for c in json.loads(out.stdout)["checks"] if c["name"] == "clock")
    assert clock["status"] == status


async def test_with_the_daemon_running(tmp_path: Path, terminal: str) -> None:
    port = free_port()
    config = site(tmp_path, terminal, CHARGER, port)
    charger = SimulatedCharger(["E1"])
    async with running(
        Daemon(parse_settings(config.read_text(), str(config)), charger=charger)
    ) as daemon:
        async with asyncio.timeout(15):
            await daemon.ready.wait()
        found = by_name(await asyncio.to_thread(run_checks, config))
    await charger.close()
    assert found["daemon"][0] == "pass"
    assert found["terminal t1"][0] == "pass" and "as the daemon sees it" in found["terminal t1"][1]
    assert found["charger link"] == ("pass", "simulated link up (1 EVSEs)")
    assert found["database"][0] == "pass" and found["journal"][0] == "pass"


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ("persistence true\n", "pass"),
        ("", "fail"),
        ("persistence true\ninclude_dir {d}\n", "fail"),
        ("include_dir {d}\n", "pass"),
    ],
)
def test_the_local_broker_must_persist(tmp_path: Path, lines: str, status: str) -> None:
    """The gateway leaves a charger's message with the broker until it is stored: a broker that
    forgets on restart loses it. Debian's mosquitto persists by default; a conf.d may undo it."""
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "site.conf").write_text(
        "persistence true\n" if status == "pass" and "include" in lines else "persistence false\n",
        encoding="utf-8",
    )
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(lines.format(d=conf_d), encoding="utf-8")
    broker = '[charger]\nenabled = true\nmode = "mqtt"\nbroker = "mqtt://127.0.0.1:1883"\n[[charger.evses]]\nid = "E1"\nterminal = "t1"\nfree_vend_kwh = "1"'
    settings = parse_settings(
        site(tmp_path, f"serial://{tmp_path / 'gone'}", broker).read_text(), "<doctor>"
    )
    assert broker_persistence(settings, conf).status == status
    remote = settings.model_copy(
        update={"charger": settings.charger.model_copy(update={"broker": "mqtt://10.0.0.5:1883"})}
    )
    assert broker_persistence(remote, conf).status == "warn"


@pytest.mark.parametrize(
    ("kind", "anonymous", "acl"),
    [("open", "fail", "fail"), ("without_acl", "pass", "fail"), ("site", "pass", "pass")],
)
def test_the_broker_must_refuse_strangers(
    tmp_path: Path, kind: str, anonymous: str, acl: str
) -> None:
    """Issue 27: doctor passed the charger link on an anonymous broker. It now asks the broker:
    an anonymous connect must be refused, and the doctor's charger account must not get a command
    through (an ACL-less broker lets any charger authorize a free charge)."""
    from firmware_bridge.broker import DOCTOR_USER
    from tests.firmware_bridge.conftest import MOSQUITTO, Broker, password

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    broker = Broker(tmp_path, open_broker=kind == "open", without_acl=kind == "without_acl")
    broker.start()
    try:
        text = (
            f'[charger]\nenabled = true\n{broker.toml()}\ndoctor_username = "{DOCTOR_USER}"\n'
            f'doctor_password = {{ value = "{password(DOCTOR_USER)}" }}\n'
            '[[charger.evses]]\nid = "E1"\nterminal = "t1"\nfree_vend_kwh = "1"'
        )
        settings = parse_settings(site(tmp_path, "serial:///dev/null", text).read_text(), "<d>")
        found = by_name(broker_access(settings, tmp_path / "no-such.conf"))
    finally:
        broker.stop()
    assert found["broker anonymous"][0] == anonymous, found
    assert found["broker ACL"][0] == acl, found


@pytest.mark.parametrize(("acl_line", "status"), [("acl_file /etc/x.acl\n", "pass"), ("", "fail")])
def test_without_a_doctor_account_the_local_config_must_have_an_acl(
    tmp_path: Path, acl_line: str, status: str
) -> None:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"persistence true\n{acl_line}", encoding="utf-8")
    text = (
        f'[charger]\nenabled = true\nmode = "mqtt"\nbroker = "mqtt://127.0.0.1:{free_port()}"\n'
        '[[charger.evses]]\nid = "E1"\nterminal = "t1"\nfree_vend_kwh = "1"'
    )
    settings = parse_settings(site(tmp_path, "serial:///dev/null", text).read_text(), "<d>")
    found = by_name(broker_access(settings, conf))
    assert found["broker anonymous"][0] == "fail"  # nobody answers on that port
    assert found["broker ACL"][0] == status
