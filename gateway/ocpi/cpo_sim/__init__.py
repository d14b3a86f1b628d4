"""The embedded CPO: a small but strict OCPI 2.3.0 CPO for the payments flow.

Serves versions and version details, the credentials registration (token A → token C), and
the payments receiver (Financial Advice Confirmations and Terminals: POST and GET by id).
It behaves like the strictest real CPO: during a registration it calls the PTP's versions and
version details back with the PTP's token B before it answers (3001 if that fails); every
request must carry ``X-Request-ID`` and ``X-Correlation-ID``, and the PTP must echo them on the
callbacks; every object is validated strictly (JSON types, lengths, enums, DateTime, the 2.3.0
Price) and unknown fields from the PTP are refused. It can register with the PTP itself
(``register_with``: CPO-initiated). It records what it stored, and can be told to fail the next
requests (``faults``): ``http500``, ``retry_after``, ``ocpi2001``, ``ocpi3001``, ``slow``
(answer after ``slow_s``), ``reset_after_store`` (store, then drop the connection without an
answer), ``drop`` (drop before storing). ``quirks`` make it deviate as real peers do:
``auth403`` (403 where 401 is meant), ``plain422`` (refusals as HTTP 422 with a non-OCPI body),
``redirect_slash`` (collections only at a trailing-slash URL; the bare one redirects),
``put_terminals`` (Terminals only by PUT on the object's URL), ``no_partial_success`` (refuses
PARTIAL_SUCCESS FACs), ``require_website`` (refuses credentials without business_details.website),
``foreign_endpoints`` (its version details name another host). ``start(tls=…)`` serves https.

One module per part: ``state`` (what it holds and can be told), ``strict`` (how strictly every
request is answered: ids, tokens, unknown fields, faults and quirks), ``registration``,
``charging`` (the CPO runs a charge), ``payments`` (the payments receiver and the custom modules)
and ``simulator`` (the routes).
"""

from __future__ import annotations

from gateway.ocpi.cpo_sim.simulator import CpoSimulator
from gateway.ocpi.cpo_sim.state import QUIRKS, VERSION, CpoState

__all__ = ["CpoSimulator", "CpoState", "QUIRKS", "VERSION"]
