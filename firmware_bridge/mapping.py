"""How the charger link looks on the broker: our own topic contract (``ContractMapping``) or,
through the same ``Mapping`` protocol, EVerest's API (``everest.py``). A mapping decodes what
chargers send and encodes the gateway's commands; ``link.py`` moves the bytes.

Who sent a message is told by the broker: a charger writes only in its own topic tree (the ACL
of ``broker.py``), so ``ContractMapping`` takes an EVSE's messages only from the tree of the
charger it belongs to, and refuses (``Refused``) a message for another charger's EVSE and a
command it did not send itself. Commands carry ``expires``: a charger that hears one late does
not obey it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Mapping as Owners
from datetime import UTC, datetime, timedelta
from typing import Protocol

from firmware_bridge import contract as m

COMMAND_TTL_S = 300  # a command not delivered within this is dropped by the broker and charger
_SENT = 10_000  # ids of the gateway's own commands remembered (to tell a forged one)


class Refused(ValueError):
    """A well-formed message from a sender that may not send it (logged as ``mqtt.refused``)."""


Publish = tuple[str, bytes]  # (topic, payload)


class Mapping(Protocol):
    """How charger messages and the gateway's commands look on the broker: our contract
    (``ContractMapping``) or EVerest's API (``firmware_bridge.everest.EverestMapping``)."""

    def subscriptions(self) -> list[str]: ...
    def decode(self, topic: str, payload: bytes) -> tuple[str, m.InboundMessage] | None: ...
    def authorize(
        self,
        evse: str,
        session_id: str,
        max_cost_minor: int,
        currency: str,
        start_by: datetime | None,
        repeat: bool = False,
    ) -> list[Publish]:
        """``repeat``: said again after a restart; nothing is published if the charger would
        not take the copy as the same authorisation."""
        ...

    def stop(self, evse: str, session_id: str, reason: str) -> list[Publish]: ...
    def report_state(self, evse: str, session_id: str) -> list[Publish]: ...
    def display(self, evse: str, lines: list[str]) -> list[Publish]: ...
    def keepalive(self) -> list[Publish]: ...


class ContractMapping:
    """Our own topic contract v1 (``contract.py``, ``README.md``). ``owners``: each EVSE's
    charger (its broker user; ``contract.DEFAULT_CHARGER`` for an EVSE not named there)."""

    def __init__(
        self,
        prefix: str,
        owners: Owners[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.prefix = prefix
        self.owners = dict(owners or {})
        self.clock = clock
        self._sent: OrderedDict[str, None] = OrderedDict()  # ids of the commands we published

    def owner(self, evse: str) -> str:
        return self.owners.get(evse, m.DEFAULT_CHARGER)

    def subscriptions(self) -> list[str]:
        return [f"{self.prefix}/charger/+/evse/+/+"]

    def decode(self, topic: str, payload: bytes) -> tuple[str, m.InboundMessage] | None:
        parsed = m.parse_topic(self.prefix, topic)
        if parsed is None:
            return None  # not ours
        charger, evse, name = parsed
        if name in m.COMMANDS:
            if _message_id(payload) in self._sent:
                return None  # our own command echoed back
            raise Refused("a command the gateway did not send")
        if name not in m.INBOUND:
            return None
        if charger != self.owner(evse):
            raise Refused(f"EVSE {evse[:48]!r} is not charger {charger[:48]!r}'s")
        return evse, m.INBOUND[name].model_validate_json(payload)

    def _command(
        self, evse: str, name: str, message: m.Authorize | m.Stop | m.ReportState | m.Display
    ) -> Publish:
        self._sent[message.id] = None
        self._sent.move_to_end(message.id)
        if len(self._sent) > _SENT:
            self._sent.popitem(last=False)
        topic = m.topic(self.prefix, self.owner(evse), evse, name)
        return topic, message.model_dump_json().encode()

    def _expires(self) -> datetime:
        return self.clock() + timedelta(seconds=COMMAND_TTL_S)

    def authorize(
        self,
        evse: str,
        session_id: str,
        max_cost_minor: int,
        currency: str,
        start_by: datetime | None,
        repeat: bool = False,  # noqa: ARG002 - the same message id: the charger takes the copy once
    ) -> list[Publish]:
        # One id per session: said again after a restart, it is a redelivery the charger ignores.
        once = "authorize-" + hashlib.sha256(session_id.encode()).hexdigest()[:32]
        expires = self._expires()
        message = m.Authorize(
            id=once,
            session_id=session_id,
            authorization_reference=reference(session_id),
            max_cost_minor=max_cost_minor,
            currency=currency,
            start_by=start_by,
            expires=min(expires, start_by) if start_by is not None else expires,
        )
        return [self._command(evse, "authorize", message)]

    def stop(self, evse: str, session_id: str, reason: str) -> list[Publish]:
        message = m.Stop(
            id=uuid.uuid4().hex, session_id=session_id, reason=reason[:100], expires=self._expires()
        )
        return [self._command(evse, "stop", message)]

    def report_state(self, evse: str, session_id: str) -> list[Publish]:
        message = m.ReportState(id=uuid.uuid4().hex, session_id=session_id, expires=self._expires())
        return [self._command(evse, "state", message)]

    def display(self, evse: str, lines: list[str]) -> list[Publish]:
        message = m.Display(
            id=uuid.uuid4().hex, lines=[line[:64] for line in lines[:8]], expires=self._expires()
        )
        return [self._command(evse, "display", message)]

    def keepalive(self) -> list[Publish]:
        return []


def _message_id(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def reference(session_id: str) -> str:
    """The session's OCPI authorization_reference (the charger carries it into its transaction)."""
    return f"EVP-{session_id}"[:36]
