"""Acquirer profiles, found by name: what ``[acquirers.NAME] profile = "…"`` selects.

A profile knows how to build its acquirer (the port's sender) and how to read its webhooks;
the engine and the receiver ask the profile, never the protocol. Adding an acquirer is adding a
profile here, not an ``if`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from gateway.acquirer import adyen_webhook
from gateway.acquirer.adyen_client import AdyenAcquirer
from gateway.acquirer.port import Acquirer, ModificationEvent
from gateway.errors import ConfigError
from gateway.settings import AcquirerSettings


@dataclass(frozen=True, slots=True)
class AcquirerProfile:
    name: str
    build: Callable[[str, AcquirerSettings, aiohttp.ClientSession], Acquirer]
    # (raw body, webhook key text) -> events; raises a BadInput when not authentic or malformed
    parse_webhook: Callable[[bytes, str], list[ModificationEvent]]
    webhook_answer: str  # what the acquirer expects once a notification is stored


def _adyen_webhook(raw: bytes, key: str) -> list[ModificationEvent]:
    return adyen_webhook.parse_notification(raw, adyen_webhook.hmac_key_bytes(key))


PROFILES: dict[str, AcquirerProfile] = {
    "adyen": AcquirerProfile(
        name="adyen",
        build=AdyenAcquirer,
        parse_webhook=_adyen_webhook,
        webhook_answer="[accepted]",
    ),
}


def profile(name: str) -> AcquirerProfile:
    found = PROFILES.get(name)
    if found is None:
        raise ConfigError(
            "<acquirers>", [f"unknown acquirer profile {name!r}; known: {', '.join(PROFILES)}"]
        )
    return found
