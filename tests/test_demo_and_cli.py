"""`evpay demo` and `evpay sessions` as a person runs them (real subprocesses)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import EVPAY, subprocess_env


@pytest.mark.timeout(120)
def test_demo_runs_the_site_end_to_end() -> None:
    result = subprocess.run(
        [*EVPAY, "demo"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=110,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    states = re.findall(r"state (\w+)", out)
    assert states == ["completed", "declined", "completed", "voided", "completed"], out
    assert (
        "captured 11.69 EUR" in out and "released 38.31 EUR" in out
    )  # 18 kWh at 0.49 + 1.00, 19 % VAT
    assert "note: declined: Karte abgelehnt" in out
    assert "541333******0074" in out and "5413330089020074" not in out
    assert "received 3 Financial Advice Confirmation(s)" in out and "9.82 + 1.87 tax EUR" in out
    nexo = out.split("- a driver pays at the nexo terminal")[1]  # its EVSE pays through nexo
    assert "state completed" in nexo and "captured 5.85 EUR" in nexo  # 8 kWh
    assert "nexo POI's own ledger: 1 transaction(s), booked 5.85 EUR, 0 reservation(s) open" in out
    assert "outbox 0 pending, 0 dead" in out
    assert "journal hash chain intact: True" in out and "daemon stopped cleanly (exit 0)" in out
    assert (
        "charger simulator on mosquitto mqtt://127.0.0.1:" in out
    )  # the README's first command installs it


def test_sessions_cli_lists_and_shows(tmp_path: Path) -> None:
    db = tmp_path / "evpay.sqlite3"
    config = tmp_path / "g.toml"
    config.write_text(
        f'[site]\nid = "S"\ncountry = "DE"\n[storage]\npath = "{db}"\n', encoding="utf-8"
    )
    missing = subprocess.run(
        [*EVPAY, "sessions", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert missing.returncode == 1 and "no database yet" in missing.stderr
    # one real session through the engine host, written to that database
    from datetime import UTC, datetime

    from drivers.base import Outcome
    from gateway.payments import events as e
    from gateway.runtime.engine_host import EngineHost
    from gateway.store import Store
    from tests.payments.fixtures import policy

    store = Store.open(db)
    host = EngineHost(store, policy(), lambda: datetime(2026, 1, 5, 9, tzinfo=UTC))
    host.handle(e.CardPresented("abc", "card", "E1", "T1", "EUR"))
    host.handle(
        e.TerminalResultArrived(
            session_id="abc",
            event_id="r",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref="12",
            card={"masked_pan": "541333******0074"},
        )
    )
    store.close()
    listed = subprocess.run(
        [*EVPAY, "sessions", "list", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    rows = json.loads(listed.stdout)
    assert (
        rows[0]["id"] == "abc"
        and rows[0]["state"] == "authorized"
        and rows[0]["authorized_minor"] == 5000
    )
    shown = subprocess.run(
        [*EVPAY, "sessions", "show", "abc", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert shown.returncode == 0
    assert "session abc: authorized" in shown.stdout and "authorized 50.00 EUR" in shown.stdout
    assert "CardPresented" in shown.stdout and "TerminalResultArrived" in shown.stdout
    nope = subprocess.run(
        [*EVPAY, "sessions", "show", "nope", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert nope.returncode == 1


def test_sessions_cli_lists_what_is_owed(tmp_path: Path) -> None:
    db = tmp_path / "evpay.sqlite3"
    config = tmp_path / "g.toml"
    config.write_text(
        f'[site]\nid = "S"\ncountry = "DE"\n[storage]\npath = "{db}"\n', encoding="utf-8"
    )
    from datetime import UTC, datetime

    from drivers.base import Outcome
    from gateway.payments import events as e
    from gateway.runtime.engine_host import EngineHost
    from gateway.store import Store
    from tests.payments.fixtures import policy

    store = Store.open(db)
    host = EngineHost(store, policy(), lambda: datetime(2026, 1, 5, 9, tzinfo=UTC))
    for sid in ("paid", "owes"):
        host.handle(e.CardPresented(sid, "card", "E1", "T1", "EUR"))
        host.handle(
            e.TerminalResultArrived(
                session_id=sid,
                event_id="r",
                operation=e.Operation.PREAUTHORIZE,
                outcome=Outcome.APPROVED,
                amount_minor=5000,
                ref="12" if sid == "paid" else "13",
            )
        )
        host.handle(e.ChargerStarted(sid, "st", 0))
        host.handle(e.ChargerStopped(session_id=sid, event_id="sp", meter_wh=10_000))
    host.handle(
        e.TerminalResultArrived(
            session_id="paid",
            event_id="c",
            operation=e.Operation.CAPTURE,
            outcome=Outcome.APPROVED,
            amount_minor=655,
            ref="20",
        )
    )
    host.handle(
        e.TerminalResultArrived(
            session_id="owes", event_id="c", operation=e.Operation.CAPTURE, outcome=Outcome.DECLINED
        )
    )
    host.handle(
        e.OpenPreauthsReported("owes", "q", ())
    )  # the receipt vanished, no evidence of the capture
    store.close()
    listed = subprocess.run(
        [*EVPAY, "sessions", "list", "--owing", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["state"], r["owed_minor"]) for r in rows] == [
        ("owes", "capture_unconfirmed", 655)
    ]
    shown = subprocess.run(
        [*EVPAY, "sessions", "show", "owes", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert (
        "owed       6.55 EUR" in shown.stdout and "hold 13: 50.00 EUR unconfirmed" in shown.stdout
    )
