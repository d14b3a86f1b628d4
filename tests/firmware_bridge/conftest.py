"""A real mosquitto for the charger-link tests, started by the suite on a free port (the
README's test command installs it); never one that happens to be running already. It is set up
as a site's is (``firmware_bridge/broker.py``): no anonymous client, a user per client, the ACL;
``open_broker`` gives the anonymous, ACL-less broker of issue 27 (for the tests that prove it is
refused)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge import broker as rules
from firmware_bridge.link import BrokerSettings
from tests.helpers import free_port

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


# Every client of the test site has its own user: the gateway, two chargers, a charger that owns
# no EVSE (the intruder), EVerest, and the doctor's probe account.
USERS: tuple[str, ...] = (rules.GATEWAY_USER, "charger", "charger2", "intruder")
USERS += (rules.EVEREST_USER, rules.DOCTOR_USER)


def password(user: str) -> str:
    return f"{user}-secret-for-tests"


class Broker:
    def __init__(
        self, directory: Path, *, open_broker: bool = False, without_acl: bool = False
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.config = directory / "mosquitto.conf"
        passwd, acl = directory / "mosquitto.passwd", directory / "mosquitto.acl"
        passwd.write_text(rules.password_file({u: password(u) for u in USERS}), encoding="utf-8")
        acl.write_text(rules.acl(), encoding="utf-8")
        passwd.chmod(0o600)
        acl.chmod(0o600)
        conf = rules.mosquitto_conf(
            port=self.port,
            password_path=str(passwd),
            acl_path=str(acl),
            persistence_dir=str(directory),
        )
        if without_acl:  # users and passwords, but any user may say anything
            conf = conf.replace(f"acl_file {acl}\n", "")
        if open_broker:  # as the demo and install set it up before issue 27
            conf = f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            conf += f"persistence_location {directory}/\n"
        self.config.write_text(
            conf + "log_dest stderr\n" + ("user root\n" if os.geteuid() == 0 else ""),
            # Run as root (as the suite does): mosquitto otherwise drops to its own user, which
            # cannot write this directory, and its persistence silently saves nothing.
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def settings(self, user: str = "charger", **changes: Any) -> BrokerSettings:
        """How ``user`` connects (the gateway's user for the gateway, a charger's for one)."""
        return BrokerSettings(url=self.url, username=user, password=password(user), **changes)

    def toml(self, user: str = rules.GATEWAY_USER) -> str:
        """The ``[charger]`` lines that connect the daemon as ``user``."""
        return (
            f'mode = "mqtt"\nbroker = "{self.url}"\nusername = "{user}"\n'
            f'password = {{ value = "{password(user)}" }}'
        )

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip(
            "mosquitto is not installed (the README's test command installs it: apt-get install mosquitto)"
        )
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()
