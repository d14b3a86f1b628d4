"""A kiosk's pay request on the local API: idempotent per client and key, stored as a session
before 202, or refused at once with the reason."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

from gateway.errors import StoreError
from gateway.payments.preauth import Target
from gateway.runtime.admission import PayAnswer
from gateway.runtime.daemon_health import DaemonHealth
from gateway.store import ApiOrigin

_LOGGER = logging.getLogger("gateway.runtime.app")  # the daemon's log name, as before


def _canonical(target: Target | None) -> tuple[str | None, int | None] | None:
    """A target as the idempotency fingerprint compares it: 20 and 20.0 kWh are one target."""
    if target is None:
        return None
    kwh = None if target.kwh is None else format(target.kwh.normalize(), "f")
    return kwh, target.amount_minor


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class KioskPayments(DaemonHealth):
    def _request_payment(
        self,
        evse: str,
        idempotency_key: str | None = None,
        target: Target | None = None,
        client: str = "",
    ) -> PayAnswer:
        """The kiosk's request: stored as a session before 202, or refused at once with why.
        Idempotency keys are the client's own (two kiosks may both send "1"); a key used again
        with another request is refused 422, as Stripe does. The client id is stored with the
        session the request creates, in the same step."""
        if self.engine is None:
            return PayAnswer(409, "no payment engine runs on this site")
        if "kiosk" not in self.settings.charger.start_paths:
            return PayAnswer(
                403, "sessions do not start from the kiosk at this site ([charger] start_paths)"
            )
        upstream = self.upstream_state()
        if self.settings.charger.mode == "ocpi" and upstream is not None and not upstream[0]:
            return PayAnswer(503, f"upstream: not registered — {upstream[1]}")
        request = hashlib.sha256(repr((evse, _canonical(target))).encode()).hexdigest()
        key_hash = None if idempotency_key is None else _sha256(idempotency_key)
        scoped = f"{client}\x00{idempotency_key}" if client and idempotency_key else idempotency_key
        try:
            if key_hash is not None:
                known = self.store.api_request(client, key_hash)
                if known is not None and known[1] != request:
                    return PayAnswer(
                        422,
                        "this Idempotency-Key was used with a different request "
                        f"(session {known[0]}): use a new key for a new request",
                    )
            with self.store.attributed(ApiOrigin(client, key_hash, request)):
                answer = self.engine.request_payment(evse, scoped, target)
        except StoreError as exc:  # disk full, read-only: nothing was stored, nothing will run
            self.store_fault = str(exc)
            _LOGGER.error("api.pay_not_stored", extra={"evse": evse, "error": str(exc)})  # noqa: TRY400 - the message says it all
            return PayAnswer(503, f"the payment could not be stored: {exc}")
        if answer.status == 202:
            self.store_fault = None  # it writes again (space was freed)
        # the busy session's id is told only to the client that started it: it is the key to
        # forging that session's charger messages (issue 27 attack)
        busy = answer.session_id if answer.status == 409 else None
        if busy is not None and self.store.session_origin(busy) != client:
            answer = replace(answer, session_id=None, state=None)
        return answer
