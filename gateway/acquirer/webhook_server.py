"""The acquirer's webhook receiver: an aiohttp sub-application mounted on the gateway's OCPI
server (its TLS listener), one per configured acquirer at ``/acquirer/{name}/notifications``.

Order of checks: HTTP Basic credentials (the webhook user Adyen was given), size, then every
item's HMAC signature and form. Only then are the events stored, and only once they are
stored is the acquirer's acknowledgement (``[accepted]``) sent: an answer means the evidence is
on disk. A store that cannot write answers 503, so the acquirer sends it again; a repeat is
stored once. No request ends in a 500. Events for another merchant account (one HMAC key may
serve a company's several accounts) are acknowledged but neither stored nor applied, as events
of codes we do not handle are: they are not about this site's payments.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from gateway.acquirer.profiles import AcquirerProfile, profile
from gateway.errors import BadInput, StoreError
from gateway.settings import Settings
from gateway.store import Store
from gateway.store.acquirer import AcquirerBook

_LOGGER = logging.getLogger(__name__)
MAX_BODY = 256 * 1024  # a notification request is a few kB; Adyen batches are small
PREFIX = "/acquirer"


class WebhookReceiver:
    def __init__(
        self,
        *,
        name: str,
        profile: AcquirerProfile,
        book: AcquirerBook,
        hmac_key: str,
        merchant_account: str,
        username: str,
        password: str,
        clock: Callable[[], datetime],
        on_events: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.profile = profile
        self.book = book
        self._hmac_key = hmac_key
        self.merchant_account = merchant_account
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.clock = clock
        self.on_events = on_events or (lambda _new: None)  # e.g. wake whoever settles sessions

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/notifications", self._notifications)
        return app

    def mount(self, parent: web.Application) -> str:
        """Add this receiver under ``/acquirer/{name}/`` of ``parent``; returns the path."""
        parent.add_subapp(f"{PREFIX}/{self.name}/", self.app())
        return f"{PREFIX}/{self.name}/notifications"

    async def _notifications(self, request: web.Request) -> web.Response:
        try:
            return await self._handle(request)
        except web.HTTPException as exc:  # body too large (413)
            return _text(exc.status, exc.reason)
        except Exception:  # never a bare 500: the acquirer retries on any non-2xx
            _LOGGER.exception("acquirer.webhook_error", extra={"acquirer": self.name})
            return _text(503, "not stored; send it again")

    async def _handle(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")  # bytes beyond UTF-8 come as surrogates
        if not given.isascii() or not hmac.compare_digest(given.encode(), self._auth.encode()):
            _LOGGER.warning("acquirer.webhook_unauthorised", extra={"acquirer": self.name})
            response = _text(401, "unknown webhook credentials")
            response.headers["WWW-Authenticate"] = 'Basic realm="evpay-acquirer"'
            return response
        if request.content_type != "application/json":
            return _text(415, "send application/json")
        raw = await request.read()
        try:
            events = self.profile.parse_webhook(raw, self._hmac_key)
        except (BadInput, binascii.Error) as exc:
            _LOGGER.warning(
                "acquirer.webhook_refused", extra={"acquirer": self.name, "reason": str(exc)}
            )
            return _text(400, str(exc))
        ours = [e for e in events if e.merchant_account == self.merchant_account]
        if len(ours) < len(events):  # one HMAC key may serve a company's merchant accounts
            _LOGGER.warning(
                "acquirer.webhook_other_account",
                extra={"acquirer": self.name, "dropped": len(events) - len(ours)},
            )
        events = ours
        try:
            new = self.book.record_events(self.name, events, self.clock())
        except StoreError as exc:
            _LOGGER.error(  # noqa: TRY400 - the store error says it all; no trace needed
                "acquirer.webhook_not_stored", extra={"acquirer": self.name}
            )
            return _text(503, f"not stored ({exc.code}); send it again")
        _LOGGER.info(
            "acquirer.webhook",
            extra={"acquirer": self.name, "events": len(events), "new": new},
        )
        if new:
            self.on_events(new)
        return _text(200, self.profile.webhook_answer)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


def webhook_receivers(
    settings: Settings,
    store: Store,
    clock: Callable[[], datetime],
    on_events: Callable[[int], None] | None = None,
) -> list[WebhookReceiver]:
    """One receiver per configured acquirer, secrets resolved (none without [acquirers]);
    ``on_events`` wakes whoever hands the settled modifications to the engine."""
    return [
        WebhookReceiver(
            name=name,
            profile=profile(acquirer.profile),
            book=store.acquirer,
            hmac_key=acquirer.hmac_key.reveal(),
            merchant_account=acquirer.merchant_account,
            username=acquirer.webhook_username,
            password=acquirer.webhook_password.reveal(),
            clock=clock,
            on_events=on_events,
        )
        for name, acquirer in settings.acquirers.items()
    ]
