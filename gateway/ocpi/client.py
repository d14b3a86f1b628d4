"""OCPI over HTTP: the envelope, ``Authorization: Token <base64>``, X-Request-ID and
X-Correlation-ID on every request, a timeout on every call, and errors classified.

``request`` returns the parsed reply or raises: ``UpstreamUnreachable`` (no usable answer;
``ambiguous`` when the request may have been received) or ``OcpiRejected`` (an answer that
refuses). Tokens never appear in logs or exception messages.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from gateway.errors import OcpiRejected, UpstreamUnreachable

MAX_REDIRECTS = 3


@dataclass(frozen=True, slots=True)
class Reply:
    http_status: int
    status_code: int
    data: Any
    message: str
    link: str = ""  # the Link header of a paginated list


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class Trust:
    """Where our tokens may be sent: the registered CPO's origin and a configured allow-list;
    https only unless a lab explicitly allows plain http. A version or endpoint URL the CPO
    publishes elsewhere is refused, never followed with our token."""

    def __init__(self, origins: Iterable[str], *, allow_http: bool = False) -> None:
        self.origins = {origin(o) if "://" in o else o.lower() for o in origins if o}
        self.allow_http = allow_http

    def add(self, url: str) -> None:
        self.origins.add(origin(url))

    def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and self.allow_http):
            raise OcpiRejected(
                f"refusing {url}: OCPI only over https (a lab may set allow_insecure_http)",
                http_status=0,
                status_code=None,
            )
        if (
            self.origins
            and origin(url) not in self.origins
            and (parts.hostname or "") not in self.origins
        ):
            raise OcpiRejected(
                f"refusing to send our token to {origin(url)}: not the CPO's origin "
                f"({', '.join(sorted(self.origins))})"
                " nor in [upstream] allowed_hosts",
                http_status=0,
                status_code=None,
            )


def authorization(token: str) -> str:
    return "Token " + base64.b64encode(token.encode("utf-8")).decode("ascii")


def retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class OcpiClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        token: str,
        timeout_s: float = 10.0,
        trust: Trust | None = None,
    ) -> None:
        self._http = http
        self.token = token  # replaced in place when the CPO rotates our credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.trust = trust

    async def request(
        self, method: str, url: str, body: Any = None, *, correlation_id: str | None = None
    ) -> Reply:
        """One OCPI call. Redirects are followed here, not by aiohttp, so that every hop passes
        the same checks as the first: https, the CPO's origin or the allow-list (a 307 once took
        our token to another origin over http). A 307/308 keeps the method and body; any other
        redirect is followed only by a GET; at most MAX_REDIRECTS hops."""
        headers = {
            "Authorization": authorization(self.token),
            "X-Request-ID": uuid.uuid4().hex,
            "X-Correlation-ID": correlation_id or uuid.uuid4().hex,
        }
        first = origin(url)
        for _hop in range(MAX_REDIRECTS + 1):
            if self.trust is not None:
                self.trust.check(url)  # our token goes only where the CPO is
            if origin(url) != first and (self.trust is None or not self.trust.origins):
                raise OcpiRejected(
                    f"refusing a redirect to {origin(url)}: our token stays at {first}",
                    http_status=0,
                    status_code=None,
                )
            status, text, after, link, location = await self._send(method, url, body, headers)
            if not (300 <= status < 400 and location):
                reply = self._classify(method, url, status, text, after)
                return Reply(reply.http_status, reply.status_code, reply.data, reply.message, link)
            if status not in (307, 308) and method != "GET":
                break
            url = str(URL(url).join(URL(location)))
        raise OcpiRejected(
            f"{method} {url}: HTTP {status}, a redirect not followed (too many, or one that "
            "would change the method)",
            http_status=status,
            status_code=None,
        )

    async def _send(
        self, method: str, url: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, str, float | None, str, str]:
        """(status, text, Retry-After, Link, Location) of one request, never redirected."""
        try:
            async with self._http.request(
                method,
                url,
                json=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                text = await resp.text()
                return (
                    resp.status,
                    text,
                    retry_after(resp.headers),
                    resp.headers.get("Link", ""),
                    resp.headers.get("Location", ""),
                )
        except TimeoutError:
            raise UpstreamUnreachable(
                f"{method} {url}: no answer in time", ambiguous=method != "GET"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(
                f"{method} {url}: cannot connect ({exc.os_error})", ambiguous=False
            ) from None
        except (
            aiohttp.ClientError,
            OSError,
        ) as exc:  # reset or broken mid-request: it may have arrived
            raise UpstreamUnreachable(
                f"{method} {url}: {type(exc).__name__}", ambiguous=method != "GET"
            ) from None

    @staticmethod
    def _classify(method: str, url: str, status: int, text: str, after: float | None) -> Reply:
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        code = body.get("status_code") if isinstance(body, dict) else None
        message = str(body.get("status_message", "")) if isinstance(body, dict) else ""
        if (
            not isinstance(code, int) and text
        ):  # not an OCPI envelope (a proxy's page, a framework error)
            message = "non-OCPI answer: " + " ".join(text.split())[:200]
        if (
            status in (408, 429)
            or status >= 500
            or (isinstance(code, int) and code // 1000 in (3, 4))
        ):
            raise UpstreamUnreachable(
                f"{method} {url}: HTTP {status}, OCPI {code} {message}".strip(),
                ambiguous=False,
                retry_after=after,
            )
        if (
            status >= 400
            or (isinstance(code, int) and code // 1000 == 2)
            or not isinstance(code, int)
        ):
            raise OcpiRejected(
                f"{method} {url}: HTTP {status}, OCPI {code} {message}".strip(),
                http_status=status,
                status_code=code,
            )
        return Reply(status, code, body.get("data"), message)
