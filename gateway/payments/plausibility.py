"""Whether a charger's meter reading can be true: the rule that keeps a forged or broken reading
from becoming a bill or a void (issue 27: a forged 1 GWh meter value priced at the hold; a
forged stop at the start reading voided a session that had charged 6 kWh).

A reading is implausible when it goes below the session's start or its last accepted reading
(a meter only counts up; a stop reads at least the last one), or when it claims more energy than
the EVSE's rated power could have delivered since the session was created. The time base is the
gateway's own clock from the session's creation, which is before the charge could start: a
burst of readings delivered late (after a restart) only makes the allowance larger, so it never
refuses a true one. An implausible reading is kept as a discrepancy on the session and changes
nothing else; the session goes on to the charger's next true reading, its stop timer or its
expiry. A verified signed (OCMF) stop record bound to the session (``metering.bound``) is the
billing truth and is never refused here. A stop that carries only the charger's session total
is screened like a stop reading.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.payments import events as e
from gateway.payments.metering import bound

if TYPE_CHECKING:
    from gateway.payments.model import Session

SLACK_WH = 50  # meter resolution and rounding between the charger's readings
KEPT = 50  # implausible readings recorded per session (a flood is not stored for ever)


def implausible(
    *,
    energy_wh: int,
    last_energy_wh: int,
    elapsed: timedelta,
    rated_power_w: int | None,
    stop: bool = False,
) -> str | None:
    """Why a reading of ``energy_wh`` since the start cannot be true, or None if it can.
    ``last_energy_wh``: the last accepted reading; ``elapsed``: since the session was created."""
    if energy_wh < 0:
        return f"{energy_wh} Wh: below the start reading"
    if energy_wh < last_energy_wh:
        what = "a stop below the last reading" if stop else "goes backwards"
        return f"{energy_wh} Wh: {what} ({last_energy_wh} Wh already reported)"
    if rated_power_w is not None:
        hours = max(elapsed.total_seconds(), 0.0) / 3600
        allowed = int(rated_power_w * hours) + SLACK_WH
        if energy_wh > allowed:
            return (
                f"{energy_wh} Wh: faster than the EVSE's rated {rated_power_w} W "
                f"(at most {allowed} Wh in {elapsed.total_seconds():.0f} s)"
            )
    return None


def screen(
    s: Session, event: e.Event, now: datetime, rated_power_w: int | None, charging: bool
) -> str | None:
    """The discrepancy to record instead of handling ``event``, or None to handle it.
    ``charging``: the session is in a charging state (only there do readings move money)."""
    start = s.metering.meter_start_wh
    if not charging or start is None:
        return None
    if isinstance(event, e.MeterValue):
        wh, stop = event.meter_wh, False
    elif isinstance(event, e.ChargerStopped):
        signed = event.signed
        if (
            signed is not None
            and signed.verified
            and signed.end_wh is not None
            and bound(s, signed)
        ):
            return None  # the meter's signed record decides what is billed
        if event.meter_wh is not None:
            wh, stop = event.meter_wh, True
        elif event.session_energy_wh is not None:  # the charger's own total: screened the same
            wh, stop = start + event.session_energy_wh, True
        else:
            return None
    else:
        return None
    why = implausible(
        energy_wh=wh - start,
        last_energy_wh=s.metering.readings[-1].energy_wh if s.metering.readings else 0,
        elapsed=now - s.created_at,
        rated_power_w=rated_power_w,
        stop=stop,
    )
    if why is None:
        return None
    kind = "stop" if stop else "meter value"
    return f"implausible {kind} (meter {wh} Wh, {event.event_id[:80]}): {why}; not used"


def clipped_stop(
    s: Session, event: e.Event, now: datetime, rated_power_w: int | None
) -> tuple[e.ChargerStopped, str] | None:
    """A stop that answers the gateway's own stop (the session is ending) and is refused only for
    its speed: the stop billed up to what the rated power allows, and the discrepancy that keeps
    the rest on record. Without it a rated power typed too low (0.011 kW for 11) made every
    charge free; never more than is plausible is billed, and no energy is dropped unsaid."""
    start = s.metering.meter_start_wh
    if not isinstance(event, e.ChargerStopped) or start is None or rated_power_w is None:
        return None
    if event.meter_wh is not None:
        claimed = event.meter_wh - start
    elif event.session_energy_wh is not None:
        claimed = event.session_energy_wh
    else:
        return None
    last = s.metering.readings[-1].energy_wh if s.metering.readings else 0
    hours = max((now - s.created_at).total_seconds(), 0.0) / 3600
    allowed = int(rated_power_w * hours) + SLACK_WH
    if claimed < last or claimed <= allowed:
        return None  # backwards (never billed), or plausible (not refused for speed)
    billed = max(allowed, last)
    clipped = replace(
        event, meter_wh=start + billed, session_energy_wh=billed, signed=None, reason=event.reason
    )
    why = (
        f"stop claims {claimed} Wh, more than the EVSE's rated {rated_power_w} W allows "
        f"({allowed} Wh since the session began): billed {billed} Wh, {claimed - billed} Wh "
        "unbilled on record (check rated_power_kw)"
    )
    return clipped, why
