"""`evpay run` as a real subprocess under a fake systemd NOTIFY_SOCKET."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.db import latest_version
from tests.helpers import EVPAY, HANG_GUARD_S, free_port, subprocess_env
from tests.site_rig import write_config


class FakeSystemd:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        # Read all the time, as systemd does: a reader that pauses fills the socket's queue and
        # the daemon then drops its pings (gateway/runtime/sdnotify.py).
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(message)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=5)
        self.sock.close()

    def wait_for(self, field: str, timeout: float = 60.0) -> None:
        """60 s: the daemon starts in well under a second, but the suite runs on loaded machines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(field in m.split("\n") for m in self.messages):
                    return
            time.sleep(0.05)
        raise AssertionError(f"no {field} within {timeout}s; got {self.messages}")

    def collect(self, seconds: float) -> None:
        time.sleep(seconds)

    def count(self, field: str) -> int:
        with self._lock:
            return sum(field in m.split("\n") for m in self.messages)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], FakeSystemd, int, Path]]:
    port = free_port()
    config = write_config(tmp_path, port=port)
    systemd = FakeSystemd(tmp_path / "notify.sock")
    proc = subprocess.Popen(
        [*EVPAY, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="400000"),
    )
    yield proc, systemd, port, config
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    systemd.close()


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read().decode()


def test_ready_watchdog_status_and_graceful_sigterm(
    daemon: tuple[subprocess.Popen[str], FakeSystemd, int, Path],
) -> None:
    proc, systemd, port, config = daemon
    systemd.wait_for("READY=1")
    ready = next(m for m in systemd.messages if "READY=1" in m)
    assert "STATUS=1/1 workers up, 0 open sessions, outbox 0 pending" in ready
    systemd.wait_for("WATCHDOG=1")
    systemd.collect(0.6)
    assert systemd.count("WATCHDOG=1") >= 2  # every 0.2 s (half of WATCHDOG_USEC)

    status, body = _get(port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = _get(port, "/metrics")
    assert 'evpay_worker_up{worker="api"} 1' in body
    assert "evpay_outbox_pending 0" in body

    cli = subprocess.run(
        [*EVPAY, "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["daemon"]["workers"][0] == {
        "name": "api",
        "state": "up",
        "restarts": 0,
        "last_error": None,
    }
    assert report["store"]["outbox_pending"] == 0

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=HANG_GUARD_S) == 0
    assert time.monotonic() - started < HANG_GUARD_S
    systemd.wait_for("STOPPING=1")
    out = proc.stdout.read() if proc.stdout else ""
    assert "event=daemon.ready" in out and "event=daemon.stopped" in out
    for line in out.splitlines():
        assert line.startswith("ts=") and " level=" in line, f"unstructured log line: {line!r}"

    after = subprocess.run(
        [*EVPAY, "status", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert after.returncode == 3
    assert "NOT REACHABLE" in after.stdout and f"schema {latest_version()}" in after.stdout


def test_sigint_also_drains(daemon: tuple[subprocess.Popen[str], FakeSystemd, int, Path]) -> None:
    proc, systemd, _port, _config = daemon
    systemd.wait_for("READY=1")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=5) == 0


def test_bad_config_exits_78_and_store_error_74(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[site]\nid = 1\n", encoding="utf-8")
    r = subprocess.run(
        [*EVPAY, "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert r.returncode == 78 and "site.country: required but missing" in r.stderr
    config = write_config(tmp_path, port=free_port())
    (tmp_path / "evpay.sqlite3").write_bytes(b"garbage" * 1000)
    r = subprocess.run(
        [*EVPAY, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
        timeout=20,
    )
    assert r.returncode == 74 and "damaged or not an evpay database" in r.stderr
