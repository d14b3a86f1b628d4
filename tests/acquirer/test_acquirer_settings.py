"""[acquirers.NAME] and a terminal's ``modifications``: validated, secrets by reference."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import check_secrets, parse_settings
from tests.helpers import EVPAY, subprocess_env

BASE = """
[site]
id = "S1"
country = "DE"

[upstream]
enabled = true
versions_url = "https://cpo.example.com/ocpi/versions"
token_a = { value = "token-a" }
key = { value = "not-checked-here" }
listen = "127.0.0.1:8443"

[[terminals]]
id = "t1"
device = "tcp://127.0.0.1:20007"
password = { value = "123456" }
modifications = "adyen"

[acquirers.adyen]
base_url = "URL"
merchant_account = "EVPayTest"
api_key = { env = "EVPAY_TEST_ADYEN_KEY" }
hmac_key = { value = "HMAC" }
webhook_username = "adyen"
webhook_password = { value = "pw" }
"""


def config(url: str = "https://checkout-test.adyen.com/v71", hmac: str = "AB" * 32) -> str:
    return BASE.replace("URL", url).replace("HMAC", hmac)


@pytest.mark.parametrize(
    "url", ["https://checkout-test.adyen.com/v71", "http://127.0.0.1:8080/v71", "http://[::1]:1/"]
)
def test_https_or_loopback_base_urls_are_accepted(url: str) -> None:
    settings = parse_settings(config(url), "<test>")
    assert settings.acquirers["adyen"].base_url == url.rstrip("/")
    assert settings.terminals[0].modifications == "adyen"


@pytest.mark.parametrize("url", ["http://checkout-test.adyen.com/v71", "ftp://x/", "nonsense"])
def test_plain_http_beyond_loopback_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"acquirers\.adyen\.base_url"):
        parse_settings(config(url), "<test>")


def test_a_terminal_naming_no_acquirer_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"names no \[acquirers\.worldline\]"):
        parse_settings(config().replace('"adyen"\n\n[acq', '"worldline"\n\n[acq'), "<test>")


def test_acquirers_need_the_ocpi_server_for_their_webhooks() -> None:
    with pytest.raises(ConfigError, match="need their webhooks"):
        parse_settings(config().replace('listen = "127.0.0.1:8443"\n', ""), "<test>")


def test_secrets_are_resolved_and_the_hmac_key_must_be_hex(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVPAY_TEST_ADYEN_KEY", raising=False)
    problems = check_secrets(parse_settings(config(hmac="not-hex"), "<test>"))
    assert "acquirers.adyen.api_key: environment variable EVPAY_TEST_ADYEN_KEY is not set" in (
        problems
    )
    assert any(p.startswith("acquirers.adyen.hmac_key: not a hex key") for p in problems)
    assert not any("not-hex" in p for p in problems)  # the secret is never in a message


def test_config_validate_refuses_a_plain_http_acquirer(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config("http://checkout.example.com/v71"), encoding="utf-8")
    result = subprocess.run(
        [*EVPAY, "config", "validate", "--skip-secrets", str(path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert result.returncode != 0
    assert "acquirers.adyen.base_url: must be https://" in result.stderr + result.stdout
