"""What request body the OCPI server takes (strict JSON types, within a size and nesting limit:
BadRequest otherwise, never a 500) and how its lists are paged (``date_from``, ``date_to``,
``offset``, ``limit``, ``Link``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.jsonscan import brackets
from gateway.ocpi.models import envelope

MAX_LIMIT = 100
MAX_BODY = 256 * 1024  # bytes: the largest object we take (a CDR with its charging periods fits)
MAX_DEPTH = 16  # JSON nesting: OCPI objects are shallow; deeper is an attack or a bug
M = TypeVar("M", bound=BaseModel)


class BadRequest(Exception):
    """A request body we refuse: answered 400 / OCPI 2001 with this message."""


def _error(http_status: int, status_code: int, message: str) -> web.Response:
    return web.json_response(envelope(status_code=status_code, message=message), status=http_status)


async def parse(request: web.Request, model: type[M]) -> M:
    """The request body as ``model`` (``decode_body``); aiohttp refuses more than MAX_BODY (413)."""
    return decode_body(await request.read(), model)


def decode_body(raw: bytes, model: type[M]) -> M:
    """``raw`` as ``model``, strictly: JSON types as the spec types them, no deeper than
    MAX_DEPTH. BadRequest otherwise, and nothing else (the fuzz campaign holds it to that)."""
    if not raw:
        raise BadRequest("a JSON body is required")
    if _too_deep(raw, MAX_DEPTH):
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"invalid {model.__name__}: {where}: {first['msg']}") from None


def _too_deep(raw: bytes, limit: int) -> bool:
    return any(depth > limit for _, depth in brackets(raw.decode("utf-8", "replace")))


def _page(request: web.Request, objects: list[dict[str, Any]]) -> web.Response:
    q = request.query
    try:
        offset = int(q.get("offset", "0"))
        limit = min(int(q.get("limit", str(MAX_LIMIT))), MAX_LIMIT)
        date_from = q.get("date_from")
        date_to = q.get("date_to")
        start = datetime.fromisoformat(date_from) if date_from else None
        end = datetime.fromisoformat(date_to) if date_to else None
    except ValueError:
        return web.json_response(
            envelope(status_code=2001, message="bad offset, limit or date"), status=400
        )
    if offset < 0 or limit < 1:
        return web.json_response(
            envelope(status_code=2001, message="bad offset or limit"), status=400
        )
    selected = [
        o
        for o in objects
        if (start is None or datetime.fromisoformat(o["last_updated"]) >= start)
        and (end is None or datetime.fromisoformat(o["last_updated"]) < end)
    ]
    page = selected[offset : offset + limit]
    headers = {"X-Total-Count": str(len(selected)), "X-Limit": str(limit)}
    if offset + limit < len(selected):
        nxt = request.url.update_query({"offset": str(offset + limit), "limit": str(limit)})
        headers["Link"] = f'<{nxt}>; rel="next"'
    return web.json_response(envelope(page), headers=headers)
