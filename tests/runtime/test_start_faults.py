"""Anything that cannot work at start stops `evpay run` at once with one clear line and a
documented exit code (78 configuration, 69 unavailable, 74 store), never a restart loop behind
a fed watchdog. Real subprocesses."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import EVPAY, free_port, subprocess_env, write_config

TERMINAL = '[[terminals]]\nid = "t1"\ndevice = "tcp://127.0.0.1:1"\npassword = {secret}\n'


def run(config: Path, timeout: float = 5.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EVPAY, "run", "--config", str(config)], capture_output=True, text=True,
                          env=env or subprocess_env(), check=False, timeout=timeout)  # fmt: skip


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
    extra = ('[upstream]\nenabled = true\nversions_url = "https://cpo.example/v"\ntoken_a = { value = "a" }\n'
             'key = { value = "nope" }\n')  # fmt: skip
    result = run(write_config(tmp_path, extra=extra))
    assert result.returncode == 78 and "upstream.key: not a Fernet key" in result.stderr


def test_a_busy_api_port_exits_69(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(write_config(tmp_path, port=port))
    assert result.returncode == 69 and f"cannot listen on 127.0.0.1:{port}" in one_line(result.stderr)


def _wait_api(port: int, timeout: float = 10.0) -> None:
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
    first = subprocess.Popen([*EVPAY, "run", "--config", str(config)], env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _wait_api(port)
        other = tmp_path / "second.toml"  # the same database, another API port
        other.write_text(config.read_text(encoding="utf-8").replace(f"port = {port}", f"port = {free_port()}"),
                         encoding="utf-8")  # fmt: skip
        result = run(other)
        assert result.returncode == 69 and f"pid {first.pid}" in one_line(result.stderr)
    finally:
        first.terminate()
        first.wait(timeout=10)


def test_the_database_deleted_under_the_daemon_stops_it_with_74(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    daemon = subprocess.Popen([*EVPAY, "run", "--config", str(config)], env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
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
    extra = (TERMINAL.format(secret='{ value = "123456" }') + '[charger]\nenabled = true\nmode = "simulated"\n'
             '[[charger.evses]]\nid = "E1"\nterminal = "t1"\n')  # fmt: skip
    config = write_config(tmp_path, port=port, extra=extra)
    daemon = subprocess.Popen([*EVPAY, "run", "--config", str(config)], env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_api(port)
        status = subprocess.run([*EVPAY, "status", "--config", str(config)], capture_output=True, text=True,
                                env=subprocess_env(), check=False)  # fmt: skip
        assert status.returncode == 1, status.stdout
        assert "degraded" in status.stdout and "terminal t1: unavailable" in status.stdout
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
