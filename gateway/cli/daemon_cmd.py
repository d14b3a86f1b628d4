"""``evpay run`` (the daemon) and ``evpay status`` (what a technician needs to see)."""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.store import Store

_EXIT_DEGRADED = (
    1  # running, but a part is down (a terminal, the upstream in charger mode ocpi, a worker)
)
_EXIT_UNREACHABLE = 3


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="run the gateway daemon")
    run.add_argument("--config", type=Path, required=True)
    run.set_defaults(handler=_run)
    status = commands.add_parser("status", help="show workers, terminals, sessions, outbox backlog")
    status.add_argument("--config", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)


def _run(args: argparse.Namespace) -> int:
    from gateway.runtime import logs
    from gateway.settings import load_checked

    settings = load_checked(args.config)  # every secret resolved and checked before anything starts
    logs.configure(settings.logging.level, settings.logging.format)
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from gateway.runtime.app import Daemon

    daemon = Daemon(settings)
    return await daemon.run()


# How long `evpay status` and `evpay doctor` wait for the daemon's local API: a site controller
# under load (a campaign, an end of day) answered /status in over 3 s, which read as unreachable.
DAEMON_ASK_TIMEOUT_S = 15


def ask_daemon(settings: Settings) -> tuple[dict[str, Any] | None, dict[str, Any], str]:
    """(/status, /health, why not) from the running daemon's local API; /status None if it is
    not reachable. `evpay status` and `evpay doctor` both ask this way."""
    base = f"http://{settings.api.host}:{settings.api.port}"
    try:
        with urllib.request.urlopen(f"{base}/status", timeout=DAEMON_ASK_TIMEOUT_S) as response:  # noqa: S310 - http to our own API
            status = dict(json.load(response))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, {}, str(getattr(exc, "reason", exc))
    return status, _health(base), ""


def _status(args: argparse.Namespace) -> int:
    from gateway.settings import load_settings

    settings = load_settings(args.config)
    report: dict[str, Any] = {"daemon": None, "store": None}
    status, health, why = ask_daemon(settings)
    report["daemon"] = status
    if status is None:
        report["daemon_error"] = why
    else:
        report["health"] = health
    report["store"] = _store_report(settings.storage.path)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_status(settings, report)
    if report["daemon"] is None:
        return _EXIT_UNREACHABLE
    return 0 if report["health"].get("status") == "ok" else _EXIT_DEGRADED


def _health(base: str) -> dict[str, Any]:
    """/health's answer, 503 (degraded) included."""
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=DAEMON_ASK_TIMEOUT_S) as response:  # noqa: S310 - http to our own API
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"status": "degraded", "error": str(exc)}


def _store_report(path: Path) -> dict[str, Any]:
    from gateway.store import Store

    if not path.exists():
        return {"path": str(path), "error": "no database yet (the daemon has not run here)"}
    try:
        store = Store.open(path, read_only=True)
    except GatewayError as exc:
        return {"path": str(path), "error": str(exc)}
    try:
        backlog = store.outbox.backlog()
        return {
            "path": str(path),
            "schema_version": store.schema_version,
            "open_sessions": [
                {"id": s["id"], "state": s["state"], "updated_at": s["updated_at"].isoformat()}
                for s in store.sessions(open_only=True)
            ],
            "terminals": store.terminals(),
            "upstream": _upstream(store),
            "outbox_pending": backlog.pending,
            "outbox_dead": backlog.dead,
            "outbox_oldest": backlog.oldest_pending.isoformat() if backlog.oldest_pending else None,
        }
    finally:
        store.close()


def _upstream(store: Store) -> dict[str, Any] | None:
    """Where the gateway is registered (never the tokens: they stay encrypted in the store)."""
    reg = store.registration()
    status = store.upstream_status()
    out: dict[str, Any] = {}
    if reg is not None:
        out.update(versions_url=reg["versions_url"], registered_at=reg["registered_at"])
    if status is not None:
        out.update(registered=status["registered"] and reg is not None, reason=status["reason"])
    return out or None


def _print_status(settings: Settings, report: dict[str, Any]) -> None:
    daemon = report["daemon"]
    print(f"site {settings.site.id} ({settings.site.name})")
    if daemon is None:
        print(
            f"daemon: NOT REACHABLE at {settings.api.host}:{settings.api.port} "
            f"({report.get('daemon_error')})"
        )
    else:
        health = report.get("health", {})
        print(
            f"daemon: running, version {daemon['version']}, up {daemon['uptime_s']} s, "
            f"{health.get('status')}"
        )
        if "store" in health:
            print(f"  store: {health['store']}")
        for name, state in health.get("terminals", {}).items():
            print(f"  terminal {name}: {state}")
        for w in daemon["workers"]:
            extra = f", last error: {w['last_error']}" if w["last_error"] else ""
            print(f"  worker {w['name']:<16} {w['state']:<8} restarts {w['restarts']}{extra}")
        age = daemon["outbox"]["oldest_age_s"]
        print(
            f"outbox: {daemon['outbox']['pending']} pending, {daemon['outbox']['dead']} dead"
            + (f", oldest {age} s" if age is not None else "")
        )
    store = report["store"]
    if "error" in store:
        print(f"store {store['path']}: {store['error']}")
        return
    print(f"store {store['path']} (schema {store['schema_version']})")
    for t in settings.terminals:
        seen = next((r for r in store["terminals"] if r["id"] == t.id), None)
        state = f"{seen['state']} since {seen['updated_at']}" if seen else "never registered"
        print(f"  terminal {t.id:<12} {t.device:<36} {state}")
    upstream = store.get("upstream")
    if settings.upstream.enabled:
        if upstream and upstream.get("registered", "versions_url" in upstream):
            where = f"registered with {upstream['versions_url']} since {upstream['registered_at']}"
        else:
            where = "not registered — " + (upstream or {}).get(
                "reason", "the upstream worker has not run yet"
            )
        print(f"upstream: {where}")
    print(f"open sessions: {len(store['open_sessions'])}")
    for s in store["open_sessions"]:
        print(f"  {s['id']}  {s['state']}  updated {s['updated_at']}")
    if daemon is None:
        print(
            f"outbox (from store): {store['outbox_pending']} pending, {store['outbox_dead']} dead, "
            f"oldest {store['outbox_oldest'] or '-'}"
        )


__all__ = ["register"]
