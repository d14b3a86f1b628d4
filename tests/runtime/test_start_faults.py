"""Anything that cannot work at start stops `evpay run` at once with one clear line and a
documented exit code (78 configuration, 69 unavailable, 74 store), never a restart loop behind
a fed watchdog. Real subprocesses."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.store import JournalEntry, Step, Store
from tests.helpers import EVPAY, free_port, subprocess_env
from tests.site_rig import write_config

TERMINAL = '[[terminals]]\nid = "t1"\ndevice = "tcp://127.0.0.1:1"\npassword = {secret}\n'


def run(
    config: Path, timeout: float = 5.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVPAY, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env or subprocess_env(),
        check=False,
        timeout=timeout,
    )


def one_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("evpay:")]
    assert errors and "Traceback" not in stderr, stderr
    return errors[0]


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ('{ file = "/nonexistent/zvt" }', "terminals.0.password: cannot read /nonexistent/zvt"),
        ('{ credential = "zvt" }', "needs $CREDENTIALS_DIRECTORY"),
        ('{ value = "abc" }', "a ZVT password is exactly 6 digits"),
        ('{ value = "12345" }', "a ZVT password is exactly 6 digits"),
    ],
    ids=["missing-file", "credential-outside-systemd", "letters", "five-digits"],
)
def test_a_bad_secret_exits_78(tmp_path: Path, secret: str, expected: str) -> None:
    config = write_config(tmp_path, extra=TERMINAL.format(secret=secret))
    env = {k: v for k, v in subprocess_env().items() if k != "CREDENTIALS_DIRECTORY"}
    result = run(config, env=env)
    assert result.returncode == 78
    assert expected in result.stderr and "evpay:" in one_line(result.stderr)


def test_a_bad_fernet_key_exits_78(tmp_path: Path) -> None:
    extra = (
        '[upstream]\nenabled = true\nversions_url = "https://cpo.example/v"\ntoken_a = { value = "a" }\n'
        'key = { value = "nope" }\n'
    )
    result = run(write_config(tmp_path, extra=extra))
    assert result.returncode == 78 and "upstream.key: not a Fernet key" in result.stderr


def test_a_busy_api_port_exits_69(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(write_config(tmp_path, port=port))
    assert result.returncode == 69 and f"cannot listen on 127.0.0.1:{port}" in one_line(
        result.stderr
    )


def _wait_api(port: int, timeout: float = 45.0) -> None:
    """A budget, not a speed check: a daemon starting on a loaded 2-core machine took over 10 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # up, and saying it is degraded
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the first daemon did not come up")


def test_a_second_daemon_on_the_same_database_exits_69_naming_the_first(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    first = subprocess.Popen(
        [*EVPAY, "run", "--config", str(config)],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_api(port)
        other = tmp_path / "second.toml"  # the same database, another API port
        other.write_text(
            config.read_text(encoding="utf-8").replace(f"port = {port}", f"port = {free_port()}"),
            encoding="utf-8",
        )
        result = run(other)
        assert result.returncode == 69 and f"pid {first.pid}" in one_line(result.stderr)
    finally:
        first.terminate()
        first.wait(timeout=10)


def test_the_database_deleted_under_the_daemon_stops_it_with_74(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    daemon = subprocess.Popen(
        [*EVPAY, "run", "--config", str(config)],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_api(port)
        (tmp_path / "evpay.sqlite3").unlink()
        code = daemon.wait(timeout=5)
        assert code == 74
        assert daemon.stderr is not None and "deleted or replaced" in daemon.stderr.read()
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_status_exits_1_while_a_terminal_is_down(tmp_path: Path) -> None:
    port = free_port()
    extra = (
        TERMINAL.format(secret='{ value = "123456" }')
        + '[charger]\nenabled = true\nmode = "simulated"\n'
        '[[charger.evses]]\nid = "E1"\nterminal = "t1"\nfree_vend_kwh = "1"\n'
    )
    config = write_config(tmp_path, port=port, extra=extra)
    daemon = subprocess.Popen(
        [*EVPAY, "run", "--config", str(config)],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_api(port)
        status = subprocess.run(
            [*EVPAY, "status", "--config", str(config)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            check=False,
        )
        assert status.returncode == 1, status.stdout
        assert "degraded" in status.stdout and "terminal t1: unavailable" in status.stdout
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def _damaged_database(tmp_path: Path, lock_says: str) -> Path:
    """A database with 300 steps whose last pages (journal rows nothing reads at start) are
    overwritten, and the lock
    file as the last daemon left it (its pid: killed; "stopped": a clean stop)."""
    db = tmp_path / "evpay.sqlite3"
    store = Store.open(db)
    for n in range(300):
        store.apply(
            Step(
                f"s{n}",
                journal=[JournalEntry("session", f"x{n}", "test", {"n": n, "pad": "p" * 200})],
            )
        )
    store.checkpoint()
    store.close()
    data = bytearray(db.read_bytes())
    for offset in range(len(data) - 4 * 4096, len(data), 4096):
        data[offset + 8 : offset + 64] = b"\xff" * 56
    db.write_bytes(bytes(data))
    (tmp_path / "evpay.sqlite3.lock").write_text(f"{lock_says}\n", encoding="ascii")
    return db


def test_after_an_unclean_stop_a_damaged_database_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, port=free_port())
    _damaged_database(tmp_path, "4242")  # the last daemon was killed
    result = run(config)
    assert result.returncode == 74 and "quick_check" in one_line(result.stderr)
    assert "store.check_before_start" in result.stdout


def test_after_a_clean_stop_the_check_runs_once_ready_and_a_damaged_file_stops_the_daemon(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    db = _damaged_database(tmp_path, "stopped")
    daemon = subprocess.Popen(
        [*EVPAY, "run", "--config", str(config)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        code = daemon.wait(timeout=15)
        out, err = daemon.communicate(timeout=5)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert code == 74 and "quick_check" in err
    assert out.index("daemon.ready") < out.index("store.check_failed")  # the start was not held up
    check = subprocess.run(
        [*EVPAY, "store", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert check.returncode == 74 and "DAMAGED" in check.stdout
    assert (tmp_path / "evpay.sqlite3.lock").read_text(
        encoding="ascii"
    ).strip() != "stopped"  # 74 is no clean stop
    assert db.exists()


def test_store_check_and_stats_on_a_sound_database(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    daemon = subprocess.Popen(
        [*EVPAY, "run", "--config", str(config)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_api(port)
    finally:
        daemon.terminate()
        out, _ = daemon.communicate(timeout=10)
    assert daemon.returncode == 0 and "store.checked" in out
    assert (tmp_path / "evpay.sqlite3.lock").read_text(encoding="ascii").strip() == "stopped"
    check = subprocess.run(
        [*EVPAY, "store", "check", "--config", str(config), "--full"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert check.returncode == 0 and check.stdout.startswith("integrity_check: ok")
    stats = subprocess.run(
        [*EVPAY, "store", "stats", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=True,
    )
    found = json.loads(stats.stdout)
    assert found["rows"]["sessions"] == 0 and found["file_bytes"] > 0
