from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from drivers.base import Outcome
from gateway.errors import ConfigError, SecretUnavailable
from gateway.payments import commands as c
from gateway.payments import events as e
from gateway.payments.session import Session, transition
from gateway.runtime.engine_setup import build_policy
from gateway.settings import SecretRef, ZvtTerminalSettings, load_settings, parse_settings
from gateway.store.journal import new_signing_key
from tests.helpers import EVPAY, REPO, subprocess_env

MINIMAL = '[site]\nid = "S1"\ncountry = "DE"\n'


@pytest.mark.parametrize("name", ["demo.toml", "gateway.example.toml"])
def test_shipped_configs_validate_with_their_secrets_in_place(name: str, tmp_path: Path) -> None:
    creds = tmp_path / "creds"  # what systemd's LoadCredential= provides
    creds.mkdir()
    (creds / "zvt-password").write_text("123456\n", encoding="utf-8")
    (creds / "ocpi-token-a").write_text("token-a\n", encoding="utf-8")
    (creds / "ocpi-token-key").write_text(Fernet.generate_key().decode() + "\n", encoding="utf-8")
    (creds / "journal-key").write_text(new_signing_key(), encoding="utf-8")
    env = {**subprocess_env(), "CREDENTIALS_DIRECTORY": str(creds), "EVPAY_ZVT_PASSWORD": "000000"}
    result = subprocess.run(
        [*EVPAY, "config", "validate", str(REPO / "config" / name)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert ": ok" in result.stdout
    offline = subprocess.run(
        [*EVPAY, "config", "validate", "--skip-secrets", str(REPO / "config" / name)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert offline.returncode == 0 and "secrets not checked" in offline.stdout


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ('{ file = "/nonexistent/zvt" }', "terminals.0.password: cannot read /nonexistent/zvt"),
        (
            '{ credential = "zvt-password" }',
            "terminals.0.password: credential 'zvt-password' needs $CREDENTIALS_DIRECTORY",
        ),
        ('{ value = "abc" }', "terminals.0.password: a ZVT password is exactly 6 digits"),
        ('{ value = "12345" }', "terminals.0.password: a ZVT password is exactly 6 digits"),
    ],
    ids=["missing-file", "credential-outside-systemd", "letters", "five-digits"],
)
def test_validate_resolves_every_secret_and_names_the_bad_key(
    tmp_path: Path, secret: str, problem: str
) -> None:
    config = tmp_path / "g.toml"
    config.write_text(
        MINIMAL
        + f'[[terminals]]\nid = "t1"\ndevice = "tcp://127.0.0.1:20007"\npassword = {secret}\n'
        '[upstream]\nenabled = true\nversions_url = "https://cpo.example/v"\n'
        'token_a = { value = "a" }\nkey = { value = "not-a-fernet-key" }\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in subprocess_env().items() if k != "CREDENTIALS_DIRECTORY"}
    result = subprocess.run(
        [*EVPAY, "config", "validate", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert problem in result.stderr and "upstream.key: not a Fernet key" in result.stderr
    assert "not-a-fernet-key" not in result.stderr  # the secret itself is never printed


def test_bad_config_exits_2_naming_file_and_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[storage]\npaht = "/tmp/x"\n[api]\nport = "eighty"\n[[terminals]]\nid = "t1"\ndevice = "tcp://h"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [*EVPAY, "config", "validate", str(bad)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    assert result.returncode == 2
    err = result.stderr
    assert str(bad) in err
    assert "site: required but missing" in err
    assert "storage.paht: unknown key" in err
    assert "api.port:" in err and "integer" in err
    assert "terminals.0.device:" in err and "host and port" in err


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings('[site\nid = "x"', "broken.toml")
    assert "broken.toml" in str(info.value) and "line 1" in str(info.value)


def test_the_retry_cap_is_not_below_the_first_interval() -> None:
    with pytest.raises(ConfigError, match="retry_max_s must not be below retry_initial_s"):
        parse_settings(MINIMAL + "[pricing]\nretry_initial_s = 60\nretry_max_s = 30\n", "<t>")
    assert (
        parse_settings(MINIMAL + "[pricing]\nretry_max_s = 60\n", "<t>").pricing.retry_max_s == 60
    )


def test_amounts_must_be_exact_strings() -> None:
    with pytest.raises(ConfigError, match=r"pricing\.hold_min: .*strings"):
        parse_settings(MINIMAL + "[pricing]\nhold_min = 5.5\n", "<t>")
    with pytest.raises(ConfigError, match=r"more decimals than EUR allows"):
        parse_settings(MINIMAL + '[pricing]\nfixed_hold = { EUR = "50.001" }\n', "<t>")
    s = parse_settings(MINIMAL + '[pricing]\nfixed_hold = { EUR = "42.50" }\n', "<t>")
    assert s.pricing.fixed_hold["EUR"] == Decimal("42.50")


def test_references_between_sections_are_checked() -> None:
    text = MINIMAL + '[charger]\n[[charger.evses]]\nid = "E1"\nterminal = "nope"\n'
    with pytest.raises(ConfigError, match="names terminal 'nope'"):
        parse_settings(text, "<t>")


def test_relative_storage_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(MINIMAL + '[storage]\npath = "data/e.sqlite3"\n', encoding="utf-8")
    assert load_settings(cfg).storage.path == tmp_path / "data" / "e.sqlite3"


def test_secrets_resolve_from_env_file_and_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVPAY_T_PW", "123456")
    assert SecretRef(env="EVPAY_T_PW").reveal() == "123456"
    (tmp_path / "pw").write_text("654321\n", encoding="utf-8")
    assert SecretRef(file=tmp_path / "pw").reveal() == "654321"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert SecretRef(credential="pw").reveal() == "654321"
    with pytest.raises(SecretUnavailable, match="EVPAY_NOPE"):
        SecretRef(env="EVPAY_NOPE").reveal()


def test_secret_values_never_appear_in_dumps_or_reprs() -> None:
    s = parse_settings(
        MINIMAL
        + '[[terminals]]\nid = "t1"\ndevice = "tcp://127.0.0.1:20007"\npassword = { value = "987123" }\n',
        "<t>",
    )
    assert "987123" not in repr(s)
    assert "987123" not in s.model_dump_json()
    terminal = s.terminals[0]
    assert isinstance(terminal, ZvtTerminalSettings) and terminal.password is not None
    assert terminal.password.reveal() == "987123"


def test_a_secret_needs_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        parse_settings(MINIMAL + '[upstream]\ntoken_a = { env = "A", file = "/b" }\n', "<t>")


@pytest.mark.parametrize(
    ("charger", "problem"),
    [
        ('broker = "mqtt://10.0.0.5:1883"', "use mqtts:// (TLS)"),
        ('broker = "mqtts://10.0.0.5:8883"', "set username and password"),
        (
            'broker = "mqtt://127.0.0.1:1883"\n[[charger.evses]]\nid = "E1"\nterminal = "t1"\n'
            'charger = "evpay-gateway"',
            "not the gateway's or the doctor's",
        ),
        (
            '[[charger.evses]]\nid = "E1"\nterminal = "t1"\nrated_power_kw = 0',
            "greater than or equal to 1",
        ),
        (  # 0.011 typed for 11 kW: every true reading would be implausible (issue 27 attack)
            '[[charger.evses]]\nid = "E1"\nterminal = "t1"\nrated_power_kw = 0.011',
            "greater than or equal to 1",
        ),
    ],
)
def test_the_charger_link_is_no_open_door(charger: str, problem: str) -> None:
    """Issue 27: a broker beyond loopback only over TLS and with our own user; an EVSE's charger
    is a charger's broker user; a rated power is a power."""
    text = f'{MINIMAL}[charger]\nenabled = true\nmode = "mqtt"\n{charger}\n'
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "<t>")
    assert problem in str(caught.value)


# ---- issue 26, items 2 and 13: every EVSE can be priced, in its terminal's currency ---------

_PRICED_SITE = """
[site]
id = "S"
country = "CH"
timezone = "Europe/Zurich"
currency = "CHF"
[[terminals]]
id = "t1"
device = "tcp://127.0.0.1:20007"
{terminal}
[charger]
enabled = true
mode = "simulated"
[[charger.evses]]
id = "E1"
terminal = "t1"
{evse}
[pricing]
fixed_hold = {{ CHF = "50.00" }}
{pricing}
tariffs = [{{ id = "EUR-T", currency = "EUR", elements = [{{ price_components = [{{ type = "ENERGY", price = "0.50", step_size = 1 }}] }}] }},
           {{ id = "CHF-T", currency = "CHF", elements = [{{ price_components = [{{ type = "ENERGY", price = "0.55", step_size = 1 }}] }}] }}]
"""


def _priced(terminal: str = "", evse: str = "", pricing: str = "") -> str:
    return _PRICED_SITE.format(terminal=terminal, evse=evse, pricing=pricing)


def test_an_evse_whose_terminal_cannot_charge_its_tariffs_currency_is_refused() -> None:
    with pytest.raises(ConfigError, match="evse 'E1' is priced with tariff 'EUR-T' in EUR"):
        parse_settings(_priced(pricing='default_tariff = "EUR-T"'), "<t>")
    with pytest.raises(ConfigError, match="terminal 't1' charges in CHF"):
        parse_settings(_priced(evse='tariff = "EUR-T"', pricing='default_tariff = "CHF-T"'), "<t>")
    ok = parse_settings(_priced(pricing='default_tariff = "CHF-T"'), "<t>")
    assert ok.terminal_currency("t1") == "CHF"
    eur = parse_settings(
        _priced(terminal='currency = "EUR"', pricing='default_tariff = "EUR-T"'), "<t>"
    )
    assert eur.terminal_currency("t1") == "EUR"


def test_a_tariff_restricted_by_current_is_refused_and_reservation_elements_are_left_out() -> None:
    """The meter data has no current: min/max_current cannot be evaluated, the tariff is refused
    (never priced as if the restriction were absent). A reservation element prices reservations,
    which this site does not sell: left out (OCPI 2.3.0 tariff 15)."""
    amps = (
        '{ id = "A", currency = "CHF", elements = [{ price_components = [{ type = "TIME", '
        'price = "1.00", step_size = 900 }], restrictions = { max_current = 32 } }] }'
    )
    text = _priced(pricing='default_tariff = "CHF-T"').replace(
        "tariffs = [", f"tariffs = [{amps},\n           "
    )
    with pytest.raises(ConfigError, match="tariff A: element 0 restricts by max_current"):
        parse_settings(text, "<t>")
    reserved = (
        '{ id = "R", currency = "CHF", elements = [{ price_components = [{ type = "TIME", '
        'price = "5.00", step_size = 60 }], restrictions = { reservation = "RESERVATION" } }, '
        '{ price_components = [{ type = "ENERGY", price = "0.25", step_size = 1 }] }] }'
    )
    text = _priced(pricing='default_tariff = "R"').replace(
        "tariffs = [", f"tariffs = [{reserved},\n           "
    )
    (element,) = build_policy(parse_settings(text, "<t>")).tariffs["*"].elements
    assert [c.type.value for c in element.components] == ["ENERGY"]


def test_a_max_price_excl_vat_only_under_mixed_vat_rates_is_refused_by_config_validate() -> None:
    """The gross under such a bound is not defined (tariff_ocpi.py ``_bounds_priceable``): the
    config names the bound and the rates; given including VAT too, it is accepted."""
    mixed = (
        '{ id = "M", currency = "CHF", max_price = { excl_vat = 30 }, '
        "elements = [{ price_components = [{ "
        'type = "ENERGY", price = "0.40", step_size = 1 }, { type = "TIME", price = "1.00", '
        "vat = 8.1, step_size = 60 }] }] }"
    )
    text = _priced(pricing='default_tariff = "CHF-T"').replace(
        "tariffs = [", f"tariffs = [{mixed},\n           "
    )
    with pytest.raises(ConfigError, match="tariff M: max_price is given excluding VAT only"):
        parse_settings(text, "<t>")
    both = mixed.replace(
        "max_price = { excl_vat = 30 }", "max_price = { excl_vat = 30, incl_vat = 32 }"
    )
    text = _priced(pricing='default_tariff = "CHF-T"').replace(
        "tariffs = [", f"tariffs = [{both},\n           "
    )
    assert parse_settings(text, "<t>") is not None


def test_an_evse_without_a_tariff_is_refused_unless_free_vend_is_explicit_and_capped() -> None:
    with pytest.raises(ConfigError, match="evse 'E1' has no tariff"):
        parse_settings(_priced(), "<t>")
    free = parse_settings(_priced(evse='free_vend_kwh = "5"'), "<t>")
    assert free.charger.evses[0].free_vend_kwh == Decimal(5)
    with pytest.raises(ConfigError, match="free_vend_kwh"):
        parse_settings(_priced(evse='free_vend_kwh = "0"'), "<t>")
    with pytest.raises(ConfigError, match="free vend is for an EVSE without a tariff"):
        parse_settings(
            _priced(evse='free_vend_kwh = "5"', pricing='default_tariff = "CHF-T"'), "<t>"
        )


def test_free_vend_stops_at_its_cap() -> None:
    text = MINIMAL + (
        '[[terminals]]\nid = "t1"\ndevice = "tcp://127.0.0.1:9"\n'
        '[charger]\nenabled = true\nmode = "simulated"\n'
        '[[charger.evses]]\nid = "E1"\nterminal = "t1"\nfree_vend_kwh = "5"\n'
    )
    policy = build_policy(parse_settings(text, "<t>"))
    t0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
    steps: list[e.Event] = [
        e.CardPresented("s", "card", "E1", "t1", "EUR"),
        e.TerminalResultArrived(
            session_id="s",
            event_id="pa",
            operation=e.Operation.PREAUTHORIZE,
            outcome=Outcome.APPROVED,
            amount_minor=5000,
            ref="7",
        ),
        e.ChargerStarted("s", "st", 0),
        e.MeterValue("s", "mv", 6000),
    ]
    session: Session | None = None
    commands: tuple[c.Command, ...] = ()
    for n, ev in enumerate(steps):
        result = transition(session, ev, t0 + timedelta(minutes=n), policy)
        session, commands = result.session, result.commands
    assert any(isinstance(x, c.StopCharger) for x in commands)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("", None),  # the default: the answer carries the increment
        ('topup_amount = "total"', None),
        (
            'topup_amount = "new_total"',
            "terminals.0.topup_amount: Input should be 'increment' or 'total'",
        ),
        ('charset = "latin-1"', "terminals.0.charset: Input should be 'cp437'"),
    ],
    ids=["default", "total", "bad-topup-amount", "bad-charset"],
)
def test_validate_checks_the_per_terminal_model_variants(
    tmp_path: Path, line: str, problem: str | None
) -> None:
    """What a terminal model does differently (docs/ZVT-VARIANTS.md) is set per terminal; a
    value the driver does not know is refused by name before anything talks to the terminal."""
    config = tmp_path / "g.toml"
    config.write_text(
        MINIMAL + '[[terminals]]\nid = "t1"\ndevice = "tcp://127.0.0.1:20007"\n'
        f'password = {{ value = "123456" }}\n{line}\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [*EVPAY, "config", "validate", str(config)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=False,
    )
    if problem is None:
        assert result.returncode == 0, result.stderr
        settings = load_settings(config)
        terminal = settings.terminals[0]
        assert isinstance(terminal, ZvtTerminalSettings)
        assert terminal.topup_amount == (line.split('"')[1] if line else "increment")
    else:
        assert result.returncode == 2 and problem in result.stderr


def test_a_card_present_refund_is_allowed_only_when_configured() -> None:
    """Issue 29: after the batch closed, a refund by card at the terminal needs the driver back
    with the card; it is made only where the site says so (false by default)."""
    terminal = '[[terminals]]\nid = "t1"\nprotocol = "zvt"\ndevice = "serial:///dev/ttyUSB0"\n'
    plain = parse_settings(MINIMAL + terminal, "<t>").terminals[0]
    allowed = parse_settings(MINIMAL + terminal + "card_present_refunds = true\n", "<t>")
    assert plain.card_present_refunds is False
    assert allowed.terminals[0].card_present_refunds is True
