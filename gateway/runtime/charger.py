"""The in-process charger simulator (tests and ``evpay demo``): one implementation of the
charger port, ``gateway.payments.charger.ChargerLink``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.fiscal.ocmf import ocmf_time, signed_record
from gateway.payments.charger import (
    ChargeFaulted,
    ChargerEvent,
    ChargerEvents,
    ChargerLink,
    ChargeStarted,
    ChargeStopped,
    MeterRead,
    PaymentRequested,
)
from gateway.payments.session import authorization_reference

_LOGGER = logging.getLogger(__name__)

__all__ = ["ChargerEvent", "ChargerLink", "EvsePlan", "SimulatedCharger"]


@dataclass(slots=True)
class EvsePlan:
    """How a simulated charge goes: what the EV takes and what goes wrong."""

    energy_wh: int = 12_000
    step_wh: int = 1_000  # energy between two meter values
    start_delay_s: float = 0.05
    meter_interval_s: float = 0.02
    never_start: bool = False
    fault_after_wh: int | None = None
    meter_key: ec.EllipticCurvePrivateKey | None = (
        None  # the meter signs its begin/end readings (OCMF)
    )
    meter_serial: str = "SIM-METER-1"


@dataclass(slots=True)
class _Evse:
    meter_wh: int = 1_000_000
    session_id: str = ""
    task: asyncio.Task[None] | None = None
    plan: EvsePlan = field(default_factory=EvsePlan)
    stop_requested: str = ""


class SimulatedCharger(ChargerEvents):
    def __init__(self, evses: list[str]) -> None:
        super().__init__()
        self._evses = {e: _Evse() for e in evses}
        self.displayed: dict[str, list[str]] = {}  # what each EVSE's screen shows
        self.state_requests: list[tuple[str, str]] = []  # (evse, session) asked to report
        self.authorized: list[tuple[str, str, int]] = []

    def plug_in(self, evse: str, plan: EvsePlan | None = None) -> None:
        """An EV arrives and its driver asks to pay at this EVSE."""
        state = self._evses[evse]
        state.plan = plan or EvsePlan()
        state.stop_requested = ""
        self._emit(PaymentRequested(evse=evse))

    async def authorize(
        self,
        evse: str,
        session_id: str,
        max_cost_minor: int,
        currency: str,
        start_by: datetime | None = None,  # noqa: ARG002 - the simulated EV starts at once
        repeat: bool = False,  # noqa: ARG002 - a copy for a session already charging is ignored below
    ) -> None:
        state = self._evses[evse]
        if state.session_id == session_id and state.task is not None:
            return  # said again after a restart: this session has its charge already
        state.session_id = session_id
        self.authorized.append((evse, session_id, max_cost_minor))
        _LOGGER.info(
            "charger.authorized",
            extra={
                "evse": evse,
                "session": session_id,
                "max_cost": max_cost_minor,
                "currency": currency,
            },
        )
        if not state.plan.never_start:
            state.task = asyncio.create_task(self._charge(evse, state), name=f"charge:{evse}")

    async def display(self, evse: str, lines: Sequence[str]) -> None:
        self.displayed[evse] = list(lines)

    async def report_state(self, evse: str, session_id: str) -> None:
        """The simulated charger reports through its charge loop: nothing more to say."""
        self.state_requests.append((evse, session_id))

    async def stop(self, evse: str, session_id: str, reason: str) -> None:
        state = self._evses[evse]
        if state.session_id == session_id:
            state.stop_requested = reason or "stop requested"

    async def _charge(self, evse: str, s: _Evse) -> None:
        plan = s.plan
        await asyncio.sleep(plan.start_delay_s)
        sid = s.session_id
        start = s.meter_wh
        began = datetime.now(UTC)
        self._emit(ChargeStarted(evse=evse, session_id=sid, meter_wh=start))
        step = max(1, plan.step_wh)
        seq = 0
        while s.meter_wh - start < plan.energy_wh and not s.stop_requested:
            await asyncio.sleep(plan.meter_interval_s)
            s.meter_wh += min(step, plan.energy_wh - (s.meter_wh - start))
            seq += 1
            if plan.fault_after_wh is not None and s.meter_wh - start >= plan.fault_after_wh:
                self._emit(ChargeFaulted(evse=evse, session_id=sid, reason="ground fault"))
                return
            self._emit(MeterRead(evse=evse, session_id=sid, meter_wh=s.meter_wh, seq=seq))
        reason = s.stop_requested or "EV full"
        signed = _ocmf(plan, sid, start, s.meter_wh, began) if plan.meter_key is not None else None
        self._emit(
            ChargeStopped(
                evse=evse,
                session_id=sid,
                meter_wh=s.meter_wh,
                session_energy_wh=s.meter_wh - start,
                reason=reason,
                signed=signed,
            )
        )

    async def close(self) -> None:
        for state in self._evses.values():
            if state.task is not None:
                state.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.task


def _ocmf(plan: EvsePlan, sid: str, start_wh: int, end_wh: int, began: datetime) -> str:
    """The simulated meter's transaction record: begin and end readings, bound to the payment by
    its authorization reference (OCMF ``ID``), signed with the plan's key."""
    assert plan.meter_key is not None  # noqa: S101 - the caller checked
    readings = [
        {"TM": ocmf_time(at), "TX": tx, "RV": wh / 1000, "RI": "1-b:1.8.0", "RU": "kWh", "ST": "G"}
        for at, tx, wh in ((began, "B", start_wh), (datetime.now(UTC), "E", end_wh))
    ]
    payload = {
        "FV": "1.0",
        "GI": "EVPAY SIMULATED METER",
        "GV": "1.0",
        "PG": "T1",
        "MS": plan.meter_serial,
        "IS": True,
        "IT": "UNDEFINED",
        "ID": authorization_reference(sid),
        "RD": readings,
    }
    return signed_record(payload, plan.meter_key)
