"""What ``evpay doctor`` checks of each configured acquirer: its API reachable (a TCP connection
to its host, no request, no key sent), the webhook receiver configured where the acquirer must
send to, and the book: modifications waiting in the queue, and overdue ones (received, no
webhook by their deadline), which fail the check because nobody knows their outcome.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from gateway.acquirer.webhook_server import PREFIX
from gateway.settings import AcquirerSettings, Settings
from gateway.store import Store

CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class AcquirerCheck:
    name: str
    status: str  # pass, fail, skip
    detail: str


def acquirer_checks(settings: Settings, store: Store | None) -> list[AcquirerCheck]:
    out = []
    for name, acquirer in settings.acquirers.items():
        label = f"acquirer {name}"
        out.append(asyncio.run(_reachable(label, acquirer)))
        public = settings.upstream.public_url.removesuffix("/ocpi/versions")
        out.append(
            AcquirerCheck(
                f"{label} webhooks",
                "pass",
                f"received at {public}{PREFIX}/{name}/notifications (Basic user "
                f"{acquirer.webhook_username!r}, HMAC): configure this URL at the acquirer",
            )
        )
        if store is not None:
            out.append(_book(label, name, store))
    return out


async def _reachable(label: str, acquirer: AcquirerSettings) -> AcquirerCheck:
    url = urlsplit(acquirer.base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _reader, writer = await asyncio.open_connection(url.hostname, port)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        return AcquirerCheck(label, "fail", f"{url.hostname}:{port} not reachable ({reason})")
    writer.close()
    await writer.wait_closed()
    return AcquirerCheck(label, "pass", f"{url.hostname}:{port} reachable")


def _book(label: str, name: str, store: Store) -> AcquirerCheck:
    book = store.acquirer
    waiting = [w for w in book.waiting() if w.acquirer == name]
    queued = sum(1 for w in waiting if w.status == "queued")
    overdue = [o for o in book.overdue(datetime.now(UTC)) if o.acquirer == name]
    detail = f"{queued} queued, {len(waiting) - queued} awaiting their webhook"
    if overdue:
        keys = ", ".join(o.modification.command_key for o in overdue[:3])
        return AcquirerCheck(
            f"{label} outcomes",
            "fail",
            f"{detail}; {len(overdue)} overdue (no webhook by the deadline; outcome unknown: "
            f"check the acquirer's back office): {keys}",
        )
    return AcquirerCheck(f"{label} outcomes", "pass", detail)
