"""Terminal settings as a union keyed by ``protocol``, the driver registry, and the capability
check of ``config validate`` (issue 28)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from drivers.nexo.asyncio.terminal import NexoTerminal
from drivers.zvt.asyncio.terminal import ZvtTerminal
from gateway.errors import ConfigError
from gateway.runtime import terminal_registry
from gateway.runtime.engine_setup import build_terminal
from gateway.settings import (
    NexoTerminalSettings,
    ZvtTerminalSettings,
    load_settings,
    parse_settings,
)
from tests.helpers import EVPAY, REPO, subprocess_env

SITE = """
[site]
id = "S1"
country = "DE"
[storage]
path = "evpay.sqlite3"
[[terminals]]
id = "t1"
{terminal}
[charger]
enabled = true
mode = "simulated"
[[charger.evses]]
id = "E1"
terminal = "t1"
free_vend_kwh = "1"
[pricing]
strategy = "{strategy}"
"""
NEXO = 'protocol = "nexo"\ndevice = "http://127.0.0.1:20008/EPASSaleToPOI/3.1"\npoi_id = "P1"\n'
ADYEN = (
    'protocol = "nexo"\ndevice = "https://127.0.0.1:8443/nexo"\nencoding = "adyen-json"\n'
    'poi_id = "V400m-1"\npinned_sha256 = "' + "ab" * 32 + '"\n'
    'key = { identifier = "K", version = 1, passphrase = { env = "EVPAY_NEXO_PASSPHRASE" } }\n'
)


def site(terminal: str, strategy: str = "fixed") -> str:
    return SITE.format(terminal=terminal, strategy=strategy)


def test_a_terminal_without_protocol_is_zvt() -> None:
    s = parse_settings(site('device = "tcp://127.0.0.1:20007"'), "<t>")
    assert isinstance(s.terminals[0], ZvtTerminalSettings)


@pytest.mark.parametrize("name", ["demo.toml", "gateway.example.toml"])
def test_the_shipped_configs_still_validate(name: str) -> None:
    settings = load_settings(REPO / "config" / name)
    assert settings.terminals and all(t.protocol in ("zvt", "nexo") for t in settings.terminals)


def test_nexo_xml_and_adyen_settings() -> None:
    s = parse_settings(site(NEXO), "<t>")
    t = s.terminals[0]
    assert isinstance(t, NexoTerminalSettings)
    assert (t.encoding, t.sale_id, t.poi_id, t.capabilities.reservations) == (
        "xml",
        "EVPAY",
        "P1",
        True,
    )
    adyen = parse_settings(site(ADYEN), "<t>").terminals[0]
    assert isinstance(adyen, NexoTerminalSettings) and adyen.key is not None


@pytest.mark.parametrize(
    ("terminal", "problem"),
    [
        (ADYEN.replace("https", "http"), "Adyen JSON goes over https"),
        (ADYEN.replace('pinned_sha256 = "' + "ab" * 32 + '"\n', ""), "needs pinned_sha256"),
        (ADYEN.split("key =")[0], "Adyen JSON needs key"),
        (NEXO.replace("http://", "tcp://"), "a nexo POI is http://"),
        (NEXO + 'password = { value = "000000" }\n', "terminals.0.password: unknown key"),
        (NEXO + 'charset = "cp437"\n', "terminals.0.charset: unknown key"),
        (NEXO + 'protocol_x = "a"\n', "unknown key"),
    ],
)
def test_nexo_settings_refused(terminal: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(site(terminal), "<t>")
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_plain_adyen_json_only_as_lab_setting() -> None:
    lab = ADYEN.replace("https", "http") + "lab_plain_http = true\n"
    assert parse_settings(site(lab), "<t>").terminals[0].protocol == "nexo"


@pytest.mark.parametrize(
    ("terminal", "strategy", "problem"),
    [
        (NEXO, "incremental", '"incremental" strategy needs top-ups'),
        (NEXO + "reservations = false\n", "fixed", "cannot pre-authorise"),
        ('device = "tcp://127.0.0.1:20007"', "incremental", "needs top-ups"),
    ],
)
def test_config_refuses_a_policy_the_terminal_cannot_do(
    terminal: str, strategy: str, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(site(terminal, strategy), "<t>")
    assert any(problem in p for p in err.value.problems), err.value.problems
    if "reservations = false" not in terminal:  # the same terminal with top-ups: accepted
        ok = parse_settings(site(terminal + "\nincremental = true\n", "incremental"), "<t>")
        assert ok.terminals[0].capabilities.incremental
    config = tmp_path / "site.toml"  # as the technician meets it
    config.write_text(site(terminal, strategy), encoding="utf-8")
    out = subprocess.run(
        [*EVPAY, "config", "validate", "--skip-secrets", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert out.returncode == 2 and problem in out.stderr, out.stderr


def test_drivers_come_from_one_registry(tmp_path: Path) -> None:
    assert set(terminal_registry.protocols()) == {"zvt", "nexo"}
    s = parse_settings(site(NEXO), str(tmp_path / "site.toml"))
    nexo = build_terminal(s, s.terminals[0])
    assert isinstance(nexo, NexoTerminal) and nexo.options.poi_id == "P1"
    assert nexo.options.state_path == tmp_path / "nexo-t1.json"  # beside the store
    s = parse_settings(
        site('device = "tcp://127.0.0.1:20007"\npassword = { value = "123456" }'), "<t>"
    )
    assert isinstance(build_terminal(s, s.terminals[0]), ZvtTerminal)
    with pytest.raises(ValueError, match="already registered"):
        terminal_registry.register("nexo", NexoTerminalSettings, terminal_registry.build)
    sources = [REPO / "gateway/runtime/engine_setup.py", REPO / "gateway/cli/terminal_cmd.py"]
    for path in sources:  # no protocol branches outside the registry
        text = path.read_text(encoding="utf-8")
        assert "protocol ==" not in text and "ZvtTerminal" not in text, path


def test_the_example_configs_nexo_terminals_validate(tmp_path: Path) -> None:
    """The documented nexo blocks (``#| `` lines of config/gateway.example.toml) are valid."""
    text = (REPO / "config" / "gateway.example.toml").read_text(encoding="utf-8")
    blocks = "\n".join(
        line.removeprefix("#| ") for line in text.splitlines() if line.startswith("#| ")
    )
    assert blocks.count("[[terminals]]") == 2
    s = parse_settings('[site]\nid = "S1"\ncountry = "DE"\n' + blocks, "<example>")
    assert [(t.protocol, t.id) for t in s.terminals] == [("nexo", "n1"), ("nexo", "a1")]


def test_a_card_first_site_needs_terminals_that_read_a_card_first() -> None:
    card_first = site(NEXO).replace(
        'mode = "simulated"', 'mode = "simulated"\nstart_paths = ["card"]'
    )
    with pytest.raises(ConfigError, match="cannot read a card before the amount"):
        parse_settings(card_first, "<t>")
    able = card_first.replace('poi_id = "P1"', 'poi_id = "P1"\ncard_first = true')
    assert parse_settings(able, "<t>").terminals[0].capabilities.card_first
