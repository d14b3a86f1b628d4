"""``evpay doctor --config FILE [--json]``: can this site take payments? A pass/fail table.

Checks, in order: the config and its secrets; the daemon; each terminal (its device there and
usable, and answering: through the running daemon, or — when the daemon is not running — by a
status enquiry of our own); the charger link; the CPO registration; the clock (hold timers and
OCPI timestamps depend on it); disk space; database integrity; the journal chain; the outbox's
age; each acquirer (reachable, its webhooks, overdue outcomes). Exit 1 if any check fails; a
``warn`` (e.g. the clock's sync cannot be told) does not fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.errors import DriverError
from gateway.cli.daemon_cmd import ask_daemon
from gateway.cli.doctor_broker import Check, broker_access, broker_persistence, rated_power
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.settings import Settings, TerminalSettings
    from gateway.store import Store

OUTBOX_MAX_AGE_S = 3600.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor", help="can this site take payments? a pass/fail table; exit 1 on a fail"
    )
    doctor.add_argument("--config", type=Path, required=True)
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument(
        "--min-free-mb", type=int, default=200, help="disk space below this fails (default 200)"
    )
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config, args.min_free_mb)
    if args.json:
        print(
            json.dumps({"ok": not _failed(checks), "checks": [asdict(c) for c in checks]}, indent=1)
        )
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.status.upper():<5} {c.name:<{width}}  {c.detail}")
    return 1 if _failed(checks) else 0


def _failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def run_checks(config: Path, min_free_mb: int = 200) -> list[Check]:
    from gateway.acquirer.doctor import acquirer_checks
    from gateway.settings import load_checked, load_settings

    try:
        settings = load_checked(config)
    except GatewayError as exc:
        checks = [Check("config", "fail", str(exc).replace("\n", " "))]
        try:
            settings = load_settings(config)  # the secrets are wrong, the rest may still be checked
        except GatewayError:
            return checks
    else:
        checks = [Check("config", "pass", f"{config}: valid, every secret resolvable")]
    daemon = _daemon(settings)
    checks.append(daemon[0])
    status, health = daemon[1], daemon[2]
    checks += _terminals(settings, health if status is not None else None)
    checks.append(_charger(settings, status))
    checks.append(broker_persistence(settings))
    checks += broker_access(settings)
    checks.append(rated_power(settings))
    store = _open(settings)
    checks.append(_upstream(settings, store))
    checks.append(_clock())
    checks.append(_disk(settings, min_free_mb))
    checks.append(_file_modes(settings))
    checks += _store_checks(settings, store)
    checks += [Check(c.name, c.status, c.detail) for c in acquirer_checks(settings, store)]
    if store is not None:
        store.close()
    return checks


def _daemon(settings: Settings) -> tuple[Check, dict[str, Any] | None, dict[str, Any]]:
    status, health, why = ask_daemon(settings)
    if status is None:
        where = f"http://{settings.api.host}:{settings.api.port}"
        return (
            Check("daemon", "fail", f"not reachable at {where} ({why}): is evpay.service running?"),
            None,
            {},
        )
    running = f"running, version {status.get('version')}, up {status.get('uptime_s')} s"
    return Check("daemon", "pass", running), status, health


def _terminals(settings: Settings, health: dict[str, Any] | None) -> list[Check]:
    from drivers.transport.url import SerialUrl, parse_device_url

    out = []
    seen = (health or {}).get("terminals", {})
    for t in settings.terminals:
        name = f"terminal {t.id}"
        url = None if t.device.startswith(("http://", "https://")) else parse_device_url(t.device)
        if isinstance(url, SerialUrl):
            path = Path(url.path)
            if not path.exists():
                out.append(
                    Check(
                        name, "fail", f"{url.path} does not exist: cable, udev rule or device name"
                    )
                )
                continue
            if not os.access(path, os.R_OK | os.W_OK):
                out.append(
                    Check(
                        name,
                        "fail",
                        f"{url.path}: no read/write permission (the service user must be "
                        "in group dialout)",
                    )
                )
                continue
        if health is not None:  # the daemon holds the device: ask it
            state = seen.get(t.id, "not reported by the daemon")
            out.append(
                Check(
                    name,
                    "pass" if state == "ok" else "fail",
                    f"{t.device}: {state} (as the daemon sees it)",
                )
            )
        else:
            out.append(_probe(settings, t))
    return out


def _probe(settings: Settings, t: TerminalSettings) -> Check:
    """A status enquiry of our own (05 01), for when no daemon holds the device."""
    from gateway.runtime.engine_setup import build_terminal

    name = f"terminal {t.id}"

    async def ask() -> Check:
        terminal = build_terminal(settings, t)
        try:
            async with asyncio.timeout(20):
                result = await terminal.status()
        except (TimeoutError, DriverError, OSError) as exc:
            return Check(name, "fail", f"no answer to a status enquiry: {exc or 'timed out'}")
        finally:
            await terminal.close()
        if result.approved:
            return Check(
                name,
                "pass",
                f"answers a status enquiry ({result.details.get('software_version', 'ok')})",
            )
        return Check(name, "fail", f"status enquiry: {result.message}")

    try:
        return asyncio.run(ask())
    except GatewayError as exc:
        return Check(name, "fail", str(exc))


def _charger(settings: Settings, status: dict[str, Any] | None) -> Check:
    if not settings.charger.enabled:
        return Check("charger link", "skip", "no charger configured")
    if status is None:
        return Check("charger link", "fail", "the daemon is not running: no charger link")
    down = [
        f"{w['name']} {w['state']}" for w in status.get("workers", []) if w.get("state") != "up"
    ]
    if down:
        return Check("charger link", "fail", f"workers not up: {', '.join(down)}")
    return Check(
        "charger link",
        "pass",
        f"{settings.charger.mode} link up ({len(settings.charger.evses)} EVSEs)",
    )


def _open(settings: Settings) -> Store | None:
    from gateway.store import Store

    if not settings.storage.path.exists():
        return None
    try:
        return Store.open(settings.storage.path, read_only=True)
    except GatewayError:
        return None


def _upstream(settings: Settings, store: Store | None) -> Check:
    if not settings.upstream.enabled:
        return Check("CPO", "skip", "no upstream configured")
    state = store.upstream_status() if store is not None else None
    if state is None:
        return Check("CPO", "fail", "never registered (has the daemon run with this config?)")
    if not state["registered"]:
        return Check("CPO", "fail", f"not registered: {state['reason']}")
    return Check(
        "CPO", "pass", f"registered ({state['reason']}), last seen {state['at']:%Y-%m-%d %H:%M} UTC"
    )


def _clock() -> Check:
    now = datetime.now(UTC)
    if now.year < 2025:
        return Check("clock", "fail", f"the clock says {now:%Y-%m-%d}: set the time (NTP)")
    timedatectl = shutil.which("timedatectl")
    if timedatectl is not None:
        try:
            answer = subprocess.run(
                [timedatectl, "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            answer = ""
        if answer == "yes":
            return Check("clock", "pass", "synchronised (NTP)")
        if answer == "no":
            return Check(
                "clock",
                "fail",
                "not synchronised: hold deadlines and OCPI times depend on it; check NTP",
            )
    if Path("/run/systemd/timesync/synchronized").exists():
        return Check("clock", "pass", "synchronised (systemd-timesyncd)")
    return Check(
        "clock",
        "warn",
        f"cannot tell whether the clock is synchronised (it says {now:%Y-%m-%d %H:%M} UTC)",
    )


def _disk(settings: Settings, min_free_mb: int) -> Check:
    where = settings.storage.path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    free_mb = usage.free // (1024 * 1024)
    detail = f"{free_mb} MiB free on {where} ({100 * usage.free // max(usage.total, 1)} %)"
    return Check("disk", "fail" if free_mb < min_free_mb else "pass", detail)


def _store_checks(settings: Settings, store: Store | None) -> list[Check]:
    from gateway.settings import journal_public_key

    if store is None:
        why = (
            "no database yet"
            if not settings.storage.path.exists()
            else "the database cannot be opened"
        )
        return [Check("database", "fail", f"{settings.storage.path}: {why}")]
    out = []
    folder = settings.storage.path.parent
    if not os.access(folder, os.W_OK):
        out.append(
            Check(
                "database",
                "fail",
                f"{folder} is not writable: the daemon cannot commit a payment there "
                "(under systemd, keep the database in /var/lib/evpay, the state directory)",
            )
        )
        return out
    problem = store.integrity()
    if problem is None:
        out.append(Check("database", "pass", f"{settings.storage.path}: integrity ok"))
    else:
        out.append(Check("database", "fail", f"{settings.storage.path}: integrity: {problem}"))
    try:
        public = journal_public_key(settings)
    except GatewayError:
        public = None
    report = store.verify_journal(public)
    if report.ok:
        left = f", {report.uncovered} newest not yet signed" if report.uncovered else ""
        out.append(
            Check(
                "journal",
                "pass",
                f"{report.rows} rows intact, proven to row {report.covered_to or 0}{left}",
            )
        )
    else:
        out.append(Check("journal", "fail", "; ".join(f.text for f in report.findings[:3])))
    if not settings.upstream.enabled:
        out.append(Check("outbox", "skip", "no upstream: the outbox is kept locally"))
        return out
    backlog = store.outbox.backlog()
    age = (
        (datetime.now(UTC) - backlog.oldest_pending).total_seconds()
        if backlog.oldest_pending
        else 0.0
    )
    detail = f"{backlog.pending} pending (oldest {age / 60:.0f} min), {backlog.dead} dead-lettered"
    bad = backlog.dead or age > OUTBOX_MAX_AGE_S
    out.append(
        Check(
            "outbox", "fail" if bad else "pass", detail + (": see evpay outbox list" if bad else "")
        )
    )
    return out


def _file_modes(settings: Settings) -> Check:
    """The database, its WAL, SHM and lock: 0600 (0640 with [storage] group), never readable
    by everyone (money records, masked card data, encrypted tokens)."""
    from gateway.store.files import database_files, mode_for, too_open

    group = settings.storage.group
    wide = [w for p in database_files(settings.storage.path) if (w := too_open(p, group))]
    if wide:
        return Check("file modes", "fail", "; ".join(wide))
    return Check("file modes", "pass", f"database files {mode_for(group):04o} or narrower")
