"""`config validate`'s broker rule (issue 27): a broker beyond loopback must be mqtts:// with a
user; URLs that look like loopback but reach elsewhere must not pass as plain MQTT."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_bridge.link import BrokerSettings
from gateway.errors import ConfigError
from gateway.settings import parse_settings
from tests.site_rig import site_toml


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://127.0.0.1@evil.example:1883",
        "mqtt://127.0.0.1:1883@evil.example",
        "mqtt://evil.example#@127.0.0.1",
        "mqtt://evil.example?127.0.0.1",
        "mqtt://127.0.0.1\\@evil.example:1883",
        "mqtt://localhost.evil.example:1883",
        "mqtt://127.0.0.1.nip.io:1883",
        "mqtt://0.0.0.0:1883",
        "mqtt://10.0.0.5:1883",
        "mqtt://[::ffff:10.0.0.5]:1883",
    ],
)
def test_a_plain_broker_that_is_not_loopback_is_refused(tmp_path: Path, url: str) -> None:
    text = site_toml(
        tmp_path / "db.sqlite3",
        {"t1": "tcp://127.0.0.1:20007"},
        charger=f'mode = "mqtt"\nbroker = "{url}"',
    )
    try:
        parse_settings(text, "<t>")
    except (ValueError, ConfigError):
        return
    # accepted: then the host the gateway connects to must be loopback
    host = BrokerSettings(url=url).host
    assert host in ("127.0.0.1", "::1", "localhost"), (url, host)
