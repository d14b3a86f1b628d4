"""A config file read, validated and its secrets checked: every problem named as
``dotted.key: what is wrong``, never a secret's value."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import ConfigError, SecretUnavailable
from gateway.input_limits import MAX_CONFIG_BYTES, Refused, check_toml_shape, read_text_file
from gateway.settings.fields import SecretRef
from gateway.settings.model import Settings
from gateway.settings.terminals import _TERMINAL_TAGS
from gateway.store.journal import load_signing_key, public_key_hex


def parse_settings(text: str, source: str) -> Settings:
    """Validate TOML text; ConfigError lists every problem as ``dotted.key: what is wrong``."""
    try:
        check_toml_shape(text)
        raw = tomllib.loads(text)
    except Refused as exc:
        raise ConfigError(source, [f"TOML refused before parsing: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax: {exc}"]) from None
    except RecursionError:  # the last line of defence if the shape check ever misses one
        raise ConfigError(source, ["TOML refused: nested too deep to parse"]) from None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err) for err in exc.errors()]) from None
    return _resolve_paths(settings, source)


def load_settings(path: Path) -> Settings:
    try:
        text = read_text_file(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    except Refused as exc:
        raise ConfigError(str(path), [f"refusing the file: {exc}"]) from None
    return parse_settings(text, str(path))


def _describe(err: ErrorDetails) -> str:
    loc = list(err["loc"])
    if len(loc) > 2 and loc[0] == "terminals" and loc[2] in _TERMINAL_TAGS:
        del loc[2]  # the union member pydantic tried: the technician wrote no such key
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (check its spelling; unknown keys are not ignored)"
    if kind == "missing":
        return f"{key}: required but missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{key}: {msg}"


def _resolve_paths(settings: Settings, source: str) -> Settings:
    """A relative storage path is relative to the config file, not to the working directory."""
    path = settings.storage.path
    if path.is_absolute() or source.startswith("<"):
        return settings
    base = Path(source).resolve().parent
    storage = settings.storage.model_copy(update={"path": base / path})
    return settings.model_copy(update={"storage": storage})


WEBHOOK_PASSWORD_MIN = 16  # characters, as for the local API's client tokens
HMAC_KEY_MIN_BYTES = 32  # Adyen's webhook HMAC keys are 32 bytes (64 hex digits)


def check_secrets(settings: Settings) -> list[str]:
    """Resolve every secret reference and check its form; one ``dotted.key: problem`` per fault.
    The secrets themselves are never part of a message."""
    problems: list[str] = []

    def resolve(key: str, ref: SecretRef | None) -> str | None:
        if ref is None:
            return None
        try:
            return ref.reveal()
        except SecretUnavailable as exc:
            problems.append(f"{key}: {str(exc).removeprefix('secret: ')}")
            return None

    for i, terminal in enumerate(settings.terminals):
        problems.extend(terminal.secret_problems(f"terminals.{i}", resolve))
    for i, client in enumerate(settings.api.clients):
        token = resolve(f"api.clients.{i}.token", client.token)
        if token is not None and len(token) < 16:
            problems.append(
                f"api.clients.{i}.token: too short ({len(token)} characters; use 16 or more)"
            )
    if settings.charger.enabled and settings.charger.mode == "mqtt":
        resolve("charger.password", settings.charger.password)  # doctor_password: doctor's own
    pem = resolve("journal.signing_key", settings.journal.signing_key)
    if pem is not None:
        try:
            load_signing_key(pem, "journal.signing_key")
        except SecretUnavailable as exc:
            problems.append(str(exc))
    if settings.upstream.enabled:
        resolve("upstream.token_a", settings.upstream.token_a)
        fernet_key = resolve("upstream.key", settings.upstream.key)
        if fernet_key is not None:
            try:
                Fernet(fernet_key.encode("ascii"))
            except (ValueError, TypeError, UnicodeEncodeError):
                problems.append("upstream.key: not a Fernet key (32 url-safe base64-encoded bytes)")
    for name, acquirer in settings.acquirers.items():
        resolve(f"acquirers.{name}.api_key", acquirer.api_key)
        password = resolve(f"acquirers.{name}.webhook_password", acquirer.webhook_password)
        if password is not None and len(password) < WEBHOOK_PASSWORD_MIN:
            problems.append(
                f"acquirers.{name}.webhook_password: too short ({len(password)} characters; "
                f"use {WEBHOOK_PASSWORD_MIN} or more)"
            )
        hmac_key = resolve(f"acquirers.{name}.hmac_key", acquirer.hmac_key)
        if hmac_key is not None and not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", hmac_key):
            problems.append(f"acquirers.{name}.hmac_key: not a hex key (as Adyen shows it)")
        elif hmac_key is not None and len(hmac_key) < 2 * HMAC_KEY_MIN_BYTES:
            problems.append(
                f"acquirers.{name}.hmac_key: too short ({len(hmac_key) // 2} bytes; Adyen's "
                f"keys have {HMAC_KEY_MIN_BYTES})"
            )
    return problems


def journal_signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """The device key that signs journal checkpoints, or None when none is configured."""
    ref = settings.journal.signing_key
    return None if ref is None else load_signing_key(ref.reveal(), "journal.signing_key")


def journal_public_key(settings: Settings) -> str | None:
    """The device key's public half (hex): what journal checkpoints are checked against."""
    key = journal_signing_key(settings)
    return public_key_hex(key) if key else None


def load_checked(path: Path) -> Settings:
    """The settings of ``path`` with every secret resolved and checked: ConfigError otherwise."""
    settings = load_settings(path)
    problems = check_secrets(settings)
    if problems:
        raise ConfigError(str(path), problems)
    return settings
