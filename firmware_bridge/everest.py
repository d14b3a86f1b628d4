"""The EVerest mapping: the gateway as an external module of EVerest's versioned MQTT
"EVerest API" (AsyncAPI specs in everest-core, ``docs/source/reference/EVerest_API``,
version 1.0.0, read at everest-core commit 23c9dac16) — not the older ``API`` module, which
cannot grant authorization.

What maps (per EVSE: its ``evse_manager_consumer`` module id and connector, configured):

- ``evse_manager_consumer/{id}/e2m/session_event``: ``SessionStarted`` (reason ``EVConnected``)
  is our plugged (ask for payment); ``TransactionStarted`` (its meter value) is started;
  ``TransactionFinished`` (meter value, reason) is stopped.
- ``evse_manager_consumer/{id}/e2m/powermeter`` (``energy_Wh_import.total``) is a meter value.
- Our authorize is ``auth_token_provider/{id}/m2e/provided_token``: a ``BankCard`` token whose
  value is the session's authorization_reference, prevalidated, for the EVSE's connector.
- Our stop is ``evse_manager_consumer/{id}/m2e/stop_transaction`` (``LocalOutOfCredit`` at the
  cost cap, else ``Other``) plus ``auth_consumer/{id}/m2e/withdraw_authorization`` (for a
  charge that never started).
- Liveness: ``m2e/communication_check`` ``true`` every few seconds on the token provider.

What does not map: EVerest has no cost cap to hand over (the gateway stops the transaction
itself at the cap), no price display in these interfaces (``display_message_API`` is left
out), and its session events carry no session id of ours — the EVSE's current session is
tracked here, and a restart recovers it from the token value (``EVP-<session>``) where
EVerest repeats it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from firmware_bridge import contract as m
from firmware_bridge.mapping import Publish, reference

BASE = "everest_api/1"


@dataclass(frozen=True, slots=True)
class EverestEvse:
    evse: str  # our EVSE id
    module: str  # its evse_manager_consumer module id
    connector: int = 1


@dataclass(slots=True)
class EverestMapping:
    token_provider: str  # the auth_token_provider module id
    auth_consumer: str  # the auth_consumer module id
    evses: list[EverestEvse]
    _sessions: dict[str, str] = field(default_factory=dict)  # our EVSE -> our session id

    def _by_module(self, module: str) -> EverestEvse | None:
        return next((e for e in self.evses if e.module == module), None)

    def _evse(self, evse: str) -> EverestEvse:
        return next(e for e in self.evses if e.evse == evse)

    def subscriptions(self) -> list[str]:
        return [
            f"{BASE}/evse_manager_consumer/+/e2m/session_event",
            f"{BASE}/evse_manager_consumer/+/e2m/powermeter",
        ]

    def decode(self, topic: str, payload: bytes) -> tuple[str, m.InboundMessage] | None:
        head = f"{BASE}/evse_manager_consumer/"
        if not topic.startswith(head):
            return None
        module, _, rest = topic[len(head) :].partition("/")
        target = self._by_module(module)
        if target is None:
            raise ValueError(f"no EVSE of ours is EVerest module {module!r}")
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("an EVerest payload is a JSON object")  # noqa: TRY004 - a bad message, reported as such
        evse = target.evse
        if rest == "e2m/powermeter":
            session = self._sessions.get(evse)
            if session is None:
                return None  # no charge of ours on this EVSE
            wh = _energy(data)
            stamp = str(data.get("timestamp", ""))
            return evse, m.Meter(
                id=_id("meter", evse, stamp), session_id=session, seq=_seq(stamp), meter_wh=wh
            )
        if rest != "e2m/session_event":
            return None
        event = data.get("event")
        uid = str(data.get("uuid", ""))
        if (
            event == "SessionStarted"
            and (data.get("session_started") or {}).get("reason") == "EVConnected"
        ):
            return evse, m.Plugged(id=_id("plugged", evse, uid))
        if event == "TransactionStarted":
            started = data.get("transaction_started") or {}
            session = self._session_of(evse, started)
            if session is None:
                return None  # not started with our token
            return evse, m.Started(
                id=_id("started", evse, uid),
                session_id=session,
                meter_wh=_energy(started.get("meter_value") or {}),
            )
        if event == "TransactionFinished":
            finished = data.get("transaction_finished") or {}
            session = self._session_of(evse, finished)
            if session is None:
                return None
            self._sessions.pop(evse, None)
            return evse, m.Stopped(
                id=_id("stopped", evse, uid),
                session_id=session,
                meter_wh=_energy(finished.get("meter_value") or {}),
                reason=str(finished.get("reason", "stopped"))[:100],
            )
        return None  # the other events change nothing for the payment

    def _session_of(self, evse: str, data: dict[str, Any]) -> str | None:
        token = ((data.get("id_tag") or {}).get("id_token") or {}).get("value", "")
        if isinstance(token, str) and token.startswith("EVP-"):
            self._sessions[evse] = token[4:]
        return self._sessions.get(evse)

    # EVerest takes neither a cap nor a deadline here: the gateway stops and withdraws itself
    def authorize(
        self,
        evse: str,
        session_id: str,
        max_cost_minor: int,  # noqa: ARG002
        currency: str,  # noqa: ARG002
        start_by: datetime | None,  # noqa: ARG002
        repeat: bool = False,
    ) -> list[Publish]:
        if (
            repeat
        ):  # a token presented again may end the charge it started: the start timeout decides
            return []
        self._sessions[evse] = session_id
        token = {
            "id_token": {"value": reference(session_id), "type": "Local"},
            "authorization_type": "BankCard",
            "connectors": [self._evse(evse).connector],
            "prevalidated": True,
        }
        return [
            (
                f"{BASE}/auth_token_provider/{self.token_provider}/m2e/provided_token",
                json.dumps(token).encode(),
            )
        ]

    def stop(self, evse: str, session_id: str, reason: str) -> list[Publish]:
        target = self._evse(evse)
        why = "LocalOutOfCredit" if "cap" in reason else "Other"
        reply = (
            f"{BASE}/evse_manager_consumer/{target.module}/e2m/stop_transaction/{uuid.uuid4().hex}"
        )
        stop = {"headers": {"replyTo": reply}, "payload": {"reason": why}}
        withdraw = {
            "headers": {"replyTo": reply.replace("stop_transaction", "withdraw_authorization")},
            "payload": {
                "evse_id": target.connector,
                "id_token": {"value": reference(session_id), "type": "Local"},
            },
        }
        return [
            (
                f"{BASE}/evse_manager_consumer/{target.module}/m2e/stop_transaction",
                json.dumps(stop).encode(),
            ),
            (
                f"{BASE}/auth_consumer/{self.auth_consumer}/m2e/withdraw_authorization",
                json.dumps(withdraw).encode(),
            ),
        ]

    def report_state(self, evse: str, session_id: str) -> list[Publish]:  # noqa: ARG002 - the mapping's shape
        return []  # EVerest publishes its meter on its own: nothing to ask; the bounded wait stops

    def display(self, evse: str, lines: list[str]) -> list[Publish]:  # noqa: ARG002 - not in the mapped interfaces
        return []  # display_message_API is not mapped: the price shows on EVerest's own screen

    def keepalive(self) -> list[Publish]:
        return [
            (f"{BASE}/auth_token_provider/{self.token_provider}/m2e/communication_check", b"true")
        ]


def _energy(meter: dict[str, Any]) -> int:
    total = (meter.get("energy_Wh_import") or {}).get("total")
    if not isinstance(total, int | float) or isinstance(total, bool) or total < 0:
        raise ValueError("energy_Wh_import.total must be a non-negative number")
    return int(total)


def _id(kind: str, evse: str, key: str) -> str:
    """A stable message id (a redelivered EVerest message maps to the same id)."""
    return hashlib.sha256(f"{kind}\x00{evse}\x00{key}".encode()).hexdigest()[:32]


def _seq(stamp: str) -> int:
    digits = "".join(ch for ch in stamp if ch.isdigit())
    return int(digits[:20]) if digits else 0
