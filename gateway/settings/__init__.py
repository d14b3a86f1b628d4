"""The one configuration model: a TOML file loaded into a pydantic tree.

Unknown keys are errors (a typo must never silently fall back to a default that moves
money). Secrets are never written in the model's output: they are *references* (an
environment variable, a file, a systemd credential) resolved only when used.

One module per section of the file (``fields`` holds what they share, ``model`` the whole
file and the checks across sections, ``loading`` reading and secrets); every name is
imported from here: ``from gateway.settings import Settings``.
"""

from __future__ import annotations

from gateway.settings.acquirers import AcquirerSettings
from gateway.settings.chargers import START_PATHS, ChargerSettings, EvseSettings, StartPath
from gateway.settings.fields import Amount, Identifier, SecretRef, is_loopback
from gateway.settings.loading import (
    check_secrets,
    journal_public_key,
    journal_signing_key,
    load_checked,
    load_settings,
    parse_settings,
)
from gateway.settings.model import Settings
from gateway.settings.pricing import PricingSettings
from gateway.settings.routes import BinRange, RouteSettings, RoutingSettings
from gateway.settings.site import (
    ApiClientSettings,
    ApiSettings,
    DaemonSettings,
    FiscalSettings,
    JournalSettings,
    LoggingSettings,
    SiteSettings,
    StorageSettings,
)
from gateway.settings.terminals import (
    SCHEMES,
    NexoKeySettings,
    NexoTerminalSettings,
    Resolve,
    TerminalSettings,
    ValidityHours,
    ZvtTerminalSettings,
)
from gateway.settings.upstream import InteropSettings, UpstreamSettings

__all__ = [
    "AcquirerSettings",
    "Amount",
    "ApiClientSettings",
    "ApiSettings",
    "BinRange",
    "ChargerSettings",
    "DaemonSettings",
    "EvseSettings",
    "FiscalSettings",
    "Identifier",
    "InteropSettings",
    "JournalSettings",
    "LoggingSettings",
    "NexoKeySettings",
    "NexoTerminalSettings",
    "PricingSettings",
    "Resolve",
    "RouteSettings",
    "RoutingSettings",
    "SCHEMES",
    "START_PATHS",
    "SecretRef",
    "Settings",
    "SiteSettings",
    "StartPath",
    "StorageSettings",
    "TerminalSettings",
    "UpstreamSettings",
    "ValidityHours",
    "ZvtTerminalSettings",
    "check_secrets",
    "is_loopback",
    "journal_public_key",
    "journal_signing_key",
    "load_checked",
    "load_settings",
    "parse_settings",
]
