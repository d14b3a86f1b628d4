"""Which holds in the POI's list, on a terminal whose modifications go online, nobody owns.

Why a rule of its own before the terminal sweep's (``EngineHost.sweep``): the POI never hears
of the captures and cancels made at the acquirer, so its list keeps every payment it made
"open" (nexo: the driver's ledger). A hold there is an orphan only when
- the acquirer's reference of it is known (the driver reads it from the hold's reference):
  without it the payment cannot be named to the acquirer, and a cancel by our merchant
  reference would name a payment we cannot tell;
- no modification of ours and no webhook ever named that payment (captured, cancelled,
  adjusted or refunded: someone owns it, or owned it);
- no session of the terminal within ``LOOKBACK`` knows it, whatever its state (a completed
  session's hold was captured online).
The sweep then adds its own rule (no open or owing session owns it, no hold being made on the
terminal) and makes each an orphan session, visible like a ZVT orphan, whose release is a
cancel at the acquirer by its pspReference (``acquirer_runner``).

Each ref examined costs a store query, so one run examines at most ``MAX_EXAMINED`` of them,
the oldest first (the list's order: the driver ledger keeps its holds in the order they were
last touched), and logs the rest as put off to a later run. The list stays short once the
acquirer runner closes every hold captured or cancelled online in the driver's ledger; a long
one means holds nobody closes, which a person should see.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from gateway.payments.model import by_reference
from gateway.payments.record import from_json
from gateway.runtime.engine_host import EngineHost

_LOGGER = logging.getLogger(__name__)

LOOKBACK = timedelta(days=35)  # longer than any pre-auth's validity: an older hold has lapsed
MAX_EXAMINED = 500  # open refs examined per run (oldest first); the rest wait for a later run


def online_orphans(
    host: EngineHost, terminal: str, open_refs: Sequence[str], driver: object
) -> tuple[str, ...]:
    """The POI's open holds (``open_refs``, in its order, oldest first) that no one can own
    (above); of a list longer than ``MAX_EXAMINED`` only its oldest are examined this run."""
    lookup = getattr(driver, "payment_reference", None)
    if lookup is None:  # a driver that cannot tell the acquirer's reference: nothing to name
        return ()
    here = [s for s in host.open_sessions() if s.terminal == terminal]
    if any(by_reference(h.ref) for s in here for h in s.holds):
        return ()  # a cancel by our reference is out: the payment it names may be one of these
    since = host.clock() - LOOKBACK
    known = {
        n
        for row in host.store.sessions_of_terminal(terminal, since)
        for h in from_json(row["data"]).holds
        for n in (h.ref, h.booking_ref)
        if n is not None
    }
    listed = list(dict.fromkeys(open_refs))
    if len(listed) > MAX_EXAMINED:
        _LOGGER.warning(
            "sweep.online_refs_bounded",
            extra={"terminal": terminal, "listed": len(listed), "examined": MAX_EXAMINED},
        )
    out = []
    for ref in listed[:MAX_EXAMINED]:
        psp = lookup(ref) if ref not in known else None
        if psp and not host.store.acquirer.touched(str(psp)):
            out.append(ref)
    return tuple(out)
