"""The standard OCPI payments flow as a ``ChargerLink``: the CPO runs the charger.

``authorize`` sends Commands.StartSession with the session's authorization_reference;
``stop`` sends StopSession. The CPO's Session pushes and its CDR come back through the
receiver endpoints (``gateway.ocpi.server``) and become the same charger events the MQTT
link gives: started, meter (the session's kWh so far), stopped (the CDR's total energy is
authoritative). The engine does not know which link it drives.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from drivers.money import currency
from gateway.errors import UpstreamError, UpstreamUnreachable
from gateway.ocpi.client import OcpiClient
from gateway.ocpi.models import (
    Cdr,
    CommandResponse,
    OcpiSession,
    SessionStatus,
    StartSession,
    StopSession,
    Token,
)
from gateway.payments.charger import (
    ChargeFaulted,
    ChargerEvents,
    ChargeStarted,
    ChargeStopped,
    MeterRead,
    PriceCorrection,
)
from gateway.payments.session import authorization_reference
from gateway.store import JournalEntry, OutboxMessage, Step, Store

_LOGGER = logging.getLogger(__name__)
_PREFIX = "EVP-"


def session_id_of(reference: str | None) -> str | None:
    """Our session id from an authorization_reference we issued (it is derived, not stored)."""
    return reference[len(_PREFIX) :] if reference and reference.startswith(_PREFIX) else None


class OcpiChargerLink(ChargerEvents):
    def __init__(
        self,
        client: OcpiClient | None,
        commands_url: str,
        response_base_url: str,
        evse_locations: dict[str, str],
        party: tuple[str, str],
        clock: Callable[[], datetime],
        store: Store | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.client = client
        self.commands_url = commands_url.rstrip("/")
        self.response_base_url = response_base_url.rstrip("/")
        self.evse_locations = evse_locations
        self.party = party
        self.clock = clock
        self._cpo_sessions: dict[str, str] = {}  # our session id -> the CPO's session id
        self._seq: dict[str, int] = {}
        self._evse: dict[str, str] = {}
        self._done: set[str] = set()
        self._cdrs: dict[str, str] = {}  # session -> the id of its first CDR (the one billed)

    def bind(self, client: OcpiClient, commands_url: str, response_base_url: str) -> None:
        """Called by the upstream worker once it is registered with the CPO (token C known)."""
        self.client = client
        self.commands_url = commands_url.rstrip("/")
        self.response_base_url = response_base_url.rstrip("/")

    async def authorize(
        self,
        evse: str,
        session_id: str,
        max_cost_minor: int,
        currency: str,
        start_by: datetime | None = None,  # noqa: ARG002 - the CPO's start timeout
        repeat: bool = False,
    ) -> None:
        if repeat:  # a second START_SESSION could start a second session: the start timeout decides
            return
        location = self.evse_locations.get(evse)
        if self.client is None:
            self._emit(
                ChargeFaulted(
                    evse=evse, session_id=session_id, reason="not registered with the CPO yet"
                )
            )
            return
        if location is None:
            self._emit(
                ChargeFaulted(
                    evse=evse,
                    session_id=session_id,
                    reason=f"no OCPI location known for EVSE {evse}",
                )
            )
            return
        reference = authorization_reference(session_id)
        self._evse[session_id] = evse
        token = Token(
            country_code=self.party[0],
            party_id=self.party[1],
            uid=session_id[:36],
            type="AD_HOC_USER",
            contract_id=session_id[:36],
            issuer="EVPay Edge",
            valid=True,
            whitelist="NEVER",
            last_updated=self.clock(),
        )
        command = StartSession(
            response_url=f"{self.response_base_url}/START_SESSION/{session_id}",
            token=token,
            location_id=location,
            evse_uid=evse,
            authorization_reference=reference,
        )
        _LOGGER.info(
            "ocpi.start_session",
            extra={
                "session": session_id,
                "evse": evse,
                "max_cost": max_cost_minor,
                "currency": currency,
            },
        )
        try:
            reply = await self.client.request(
                "POST", f"{self.commands_url}/START_SESSION", command.to_json()
            )
            response = CommandResponse.model_validate(reply.data)
        except UpstreamUnreachable as exc:
            if exc.ambiguous:
                # The CPO may have started the charge. Keep the hold: the CPO's Session push or
                # CommandResult resolves it, else the start timeout releases it — and a CDR that
                # comes after that is recorded as unpaid energy, never dropped.
                _LOGGER.warning(
                    "ocpi.start_session_ambiguous", extra={"session": session_id, "error": str(exc)}
                )
                return
            self._emit(
                ChargeFaulted(
                    evse=evse, session_id=session_id, reason=f"StartSession failed: {exc}"
                )
            )
            return
        except (UpstreamError, ValueError) as exc:
            self._emit(
                ChargeFaulted(
                    evse=evse, session_id=session_id, reason=f"StartSession failed: {exc}"
                )
            )
            return
        if response.result != "ACCEPTED":
            self._emit(
                ChargeFaulted(
                    evse=evse, session_id=session_id, reason=f"StartSession {response.result}"
                )
            )

    def cpo_session(self, session_id: str) -> str | None:
        """The CPO's session id for ours: from memory, else from the Session pushes stored in the
        inbox (so a restarted gateway can still send StopSession)."""
        found = self._cpo_sessions.get(session_id)
        if found is None and self.store is not None:
            reference = authorization_reference(session_id)
            pushes = [p["payload"] for p in self.store.inbox("session")]
            found = next(
                (p["id"] for p in pushes if p.get("authorization_reference") == reference), None
            )
            if found is not None:
                self._cpo_sessions[session_id] = found
        return found

    async def display(self, evse: str, lines: Sequence[str]) -> None:
        """The CPO runs the charger and its screen: nothing to show from here."""

    async def report_state(self, evse: str, session_id: str) -> None:
        """OCPI has no command that asks a charger for its state: the session's bounded wait
        ends in a stop (StopSession), which the CPO answers."""

    async def stop(self, evse: str, session_id: str, reason: str) -> None:  # noqa: ARG002 - the ChargerLink shape
        cpo_session = self.cpo_session(session_id)
        if cpo_session is None or self.client is None:
            _LOGGER.warning(
                "ocpi.stop_unknown_session", extra={"session": session_id, "reason": reason}
            )
            return
        command = StopSession(
            response_url=f"{self.response_base_url}/STOP_SESSION/{session_id}",
            session_id=cpo_session,
        )
        if self.store is not None:
            # Stopping protects the hold: the command is stored and retried until the CPO has it.
            message = OutboxMessage(
                f"{session_id}:stop_session:{uuid.uuid4().hex[:8]}",
                f"command:{session_id}",
                "command.stop_session",
                command.to_json(),
            )
            journal = JournalEntry("session", session_id, "ocpi.stop_session", {"reason": reason})
            self.store.apply(
                Step(f"stop:{message.message_id}", outbox=[message], journal=[journal])
            )
            return
        try:
            await self.client.request(
                "POST", f"{self.commands_url}/STOP_SESSION", command.to_json()
            )
        except UpstreamError as exc:
            _LOGGER.warning("ocpi.stop_failed", extra={"session": session_id, "error": str(exc)})

    # ---- what the CPO pushes (called by the receiver endpoints after the inbox step) ----------

    def session_pushed(self, session: OcpiSession) -> None:
        ours = session_id_of(session.authorization_reference)
        if ours is None or ours in self._done:
            return
        first = ours not in self._cpo_sessions
        self._cpo_sessions[ours] = session.id
        if session.status in (SessionStatus.ACTIVE, SessionStatus.COMPLETED) and first:
            self._emit(ChargeStarted(evse=session.evse_uid, session_id=ours, meter_wh=0))
        wh = int(session.kwh * 1000)
        if session.status is SessionStatus.ACTIVE and not first:
            self._seq[ours] = self._seq.get(ours, 0) + 1
            self._emit(
                MeterRead(evse=session.evse_uid, session_id=ours, meter_wh=wh, seq=self._seq[ours])
            )
        elif session.status is SessionStatus.INVALID:
            self._done.add(ours)
            self._emit(
                ChargeFaulted(
                    evse=session.evse_uid,
                    session_id=ours,
                    reason="the CPO marked the session invalid",
                )
            )

    def cdr_pushed(self, cdr: Cdr) -> None:
        """The CDR closes the session: its total energy is what is billed."""
        ours = session_id_of(cdr.authorization_reference)
        if ours is None:
            return
        first = self._cdrs.setdefault(ours, self._first_cdr(ours) or cdr.id)
        if first != cdr.id:  # a corrected CDR for a session already billed: a refund if it is lower
            gross = Decimal(str(cdr.total_cost.before_taxes)) + sum(
                (Decimal(str(t.amount)) for t in cdr.total_cost.taxes or ()), Decimal(0)
            )
            exponent = currency(cdr.currency).exponent
            total = int(gross.scaleb(exponent).to_integral_value(ROUND_HALF_UP))
            self._emit(
                PriceCorrection(
                    evse=self._evse.get(ours, "?"),
                    session_id=ours,
                    total_minor=total,
                    reason=f"corrected CDR {cdr.id}",
                    seq=len(self._cdrs),
                    currency=cdr.currency,
                )
            )
            return
        if ours in self._done:
            return
        self._done.add(ours)
        wh = int(cdr.total_energy * 1000)
        evse = self._evse.get(ours, "?")
        invoicer = "cpo" if cdr.invoice_reference_id else "ptp"
        self._emit(
            ChargeStopped(
                evse=evse,
                session_id=ours,
                meter_wh=wh,
                session_energy_wh=wh,
                reason="CDR received",
                invoicer=invoicer,
                invoice_reference=cdr.invoice_reference_id,
            )
        )

    def _first_cdr(self, session_id: str) -> str | None:
        """The id of the session's first CDR (the one it is billed with) as the store's inbox
        has it — oldest first — so a correction after a restart is still a correction (the
        receiver stores a CDR before it hands it here)."""
        if self.store is None:
            return None
        reference = authorization_reference(session_id)
        stored = reversed(self.store.inbox("cdr"))  # the inbox lists newest first
        return next(
            (
                str(m["payload"]["id"])
                for m in stored
                if m["payload"].get("authorization_reference") == reference
            ),
            None,
        )

    def command_result(self, command: str, session_id: str, result: str) -> None:
        """The asynchronous CommandResult: a StartSession that failed at the charger ends the
        session."""
        if (
            command == "START_SESSION"
            and result != "ACCEPTED"
            and session_id not in self._cpo_sessions
        ):
            self._done.add(session_id)
            self._emit(
                ChargeFaulted(
                    evse=self._evse.get(session_id, "?"),
                    session_id=session_id,
                    reason=f"StartSession result {result}",
                )
            )
