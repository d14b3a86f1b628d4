"""The local API's connection guard: a cap per listener, a header timeout, and each request's
arrival time (for the deadline a request must start within).

Why: with no header timeout and no cap, ~1,500 idle or half-sent connections (slow-loris) kept
kiosk payments and ``/health`` from being answered. Here every connection that has not sent a
whole request head is *idle*: it is closed ``header_timeout_s`` after it opened (or after its
last answer), and when the listener is full a new connection evicts the oldest idle one. A
connection whose request is being handled is never evicted; when every slot is busy the new one
is answered 503 and closed. So hanging connections can hold slots only for a header timeout and
cannot keep a client that sends its request at once from being served.

The guard wraps aiohttp's protocol (a public callable of ``web.Server``) instead of subclassing
its internals: each asyncio callback is noted, then passed on unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

_LOGGER = logging.getLogger(__name__)
MAX_CONNECTIONS = 256  # per listener; LimitNOFILE in the unit leaves room for several listeners
HEADER_TIMEOUT_S = 10.0  # from connecting (or the last answer) to a whole request head
BODY_TIMEOUT_S = 10.0  # reading a request's body
REQUEST_DEADLINE_S = 15.0  # from a request's first byte to its handling: later, it is not run
# the guard each open connection is under: a middleware of any app behind a GuardedSite finds it
# from the request's transport (the OCPI server's app does not know its listener's guard)
_OWNER: dict[asyncio.BaseTransport, ConnectionGuard] = {}
_FULL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(slots=True)
class _Conn:
    transport: asyncio.Transport
    idle_since: float
    arrived: float | None = None  # loop time of the current request's first byte
    busy: bool = False
    body: bool = False  # its request is handled and may be waiting for its body
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class ConnectionGuard:
    """Shared by every connection of one listener."""

    max_connections: int = MAX_CONNECTIONS
    header_timeout_s: float = HEADER_TIMEOUT_S
    _conns: dict[asyncio.BaseTransport, _Conn] = field(default_factory=dict)
    evicted: int = 0
    refused: int = 0

    def wrap(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server``: aiohttp's, guarded."""
        return lambda: _Guarded(inner(), self)

    def __len__(self) -> int:
        return len(self._conns)

    def started(self, transport: asyncio.BaseTransport | None) -> float | None:
        """A request's head was read: the connection is busy (never evicted, no header timer);
        the loop time its first byte arrived, for the request's deadline."""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is None:
            return None
        conn.busy = True
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        return conn.arrived

    @property
    def body_limit(self) -> int:
        """Connections that may wait for a request body at once: the rest of the listener is
        kept for requests without one (/health) and new connections (issue 27 attack: slow
        authenticated bodies in every slot kept /health from being answered)."""
        return max(1, self.max_connections - max(2, self.max_connections // 8))

    def may_read_body(self, transport: asyncio.BaseTransport | None) -> bool:
        """A handled request with a body: may it wait for it (True), or is it refused now
        because ``body_limit`` connections already do?"""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is None:
            return True
        if sum(c.body for c in self._conns.values()) >= self.body_limit:
            _LOGGER.warning("api.bodies_full", extra={"limit": self.body_limit})
            return False
        conn.body = True
        return True

    def finished(self, transport: asyncio.BaseTransport | None) -> None:
        """The answer was given: idle again, and the header timeout runs from now."""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is not None:
            conn.busy, conn.body, conn.arrived = False, False, None
            self._idle(conn)

    # ---- called by _Guarded ------------------------------------------------------------------

    def admit(self, transport: asyncio.Transport) -> bool:
        if len(self._conns) >= self.max_connections:
            idle = [c for c in self._conns.values() if not c.busy]
            if not idle:
                self.refused += 1
                _LOGGER.warning("api.connections_full", extra={"limit": self.max_connections})
                transport.write(_FULL)
                transport.close()
                return False
            oldest = min(idle, key=lambda c: c.idle_since if c.arrived is None else c.arrived)
            self.evicted += 1
            self._close(oldest)
        conn = _Conn(transport, asyncio.get_running_loop().time())
        self._conns[transport] = conn
        _OWNER[transport] = self
        self._idle(conn)
        return True

    def received(self, transport: asyncio.BaseTransport) -> None:
        conn = self._conns.get(transport)
        if conn is not None and not conn.busy and conn.arrived is None:
            conn.arrived = asyncio.get_running_loop().time()

    def lost(self, transport: asyncio.BaseTransport) -> None:
        _OWNER.pop(transport, None)
        conn = self._conns.pop(transport, None)
        if conn is not None and conn.timer is not None:
            conn.timer.cancel()

    def _idle(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = loop.call_later(self.header_timeout_s, self._expire, conn)

    def _expire(self, conn: _Conn) -> None:
        conn.timer = None
        if not conn.busy:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        _OWNER.pop(conn.transport, None)
        self._conns.pop(conn.transport, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.transport.abort()  # no lingering: the slot and the descriptor are free now


@web.middleware
async def busy_while_handled(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Marks the request's connection busy with its listener's guard while it is handled (its
    body arriving too): a flood of idle connections never evicts a request in flight. For an app
    that does not hold its guard (the OCPI server); the local API does the same in its own."""
    transport = request.transport
    guard = _OWNER.get(transport) if transport is not None else None
    if guard is None:
        return await handler(request)
    guard.started(transport)
    try:
        if request.body_exists and not guard.may_read_body(transport):
            return too_many_bodies()
        return await handler(request)
    finally:
        guard.finished(transport)


def too_many_bodies() -> web.Response:
    return web.json_response(
        {"error": "too many requests waiting for their bodies; try again"},
        status=503,
        headers={"Retry-After": "1", "Connection": "close"},
    )


class _Guarded(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a TCP listener's
        if not self._guard.admit(transport):
            return
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        self._guard.received(self._transport)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._transport is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._guard.lost(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with the guard in front of every connection (the local API and the
    OCPI server): stopped and cleaned up by its runner like any other site."""

    __slots__ = ("_guard",)

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            runner,
            host,
            port,
            ssl_context=ssl_context,
            reuse_address=True,
            backlog=guard.max_connections,
        )
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None  # noqa: S101 - the runner was set up
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
