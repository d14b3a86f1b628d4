"""The sale system's side of nexo's default mode: what the POI POSTs to *us*.

In the XML LAN transport both ends run a server (Swedbank Pay's "act as both server and
client"): the POI sends ``EventNotification`` (no answer), ``DisplayRequest`` for the cashier
display and ``PrintRequest`` for receipts it wants printed. Sans-I/O: a decoded message in, the
answer (or None) and a ``PoiNotice`` for the gateway out. Anything else is a typed error, which
the edge answers with HTTP 400.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from drivers.nexo import messages as nm
from drivers.nexo.errors import NexoFormatError
from drivers.nexo.messages import Message
from drivers.nexo.model import MessageType, Response, Result


@dataclass(frozen=True, slots=True)
class PoiNotice:
    """What the POI told the sale system; ``lines`` are display or receipt text."""

    kind: Literal["event", "display", "print"]
    poi_id: str
    lines: tuple[str, ...] = ()
    event: str | None = None
    document: str | None = None


def answer_poi(message: Message, *, sale_id: str, poi_id: str) -> tuple[Message | None, PoiNotice]:
    header = message.header
    if header.sale_id != sale_id or header.poi_id != poi_id:
        raise NexoFormatError("MessageHeader", f"{header.sale_id}/{header.poi_id} is not ours")
    body = message.body
    ok = Response(Result.SUCCESS)
    reply_header = replace(header, message_type=MessageType.RESPONSE)
    if isinstance(body, nm.EventNotification):
        details = (body.event_details,) if body.event_details else ()
        return None, PoiNotice("event", header.poi_id, details, event=body.event_to_notify)
    if isinstance(body, nm.DisplayRequest):
        lines = tuple(t for d in body.display_output for t in d.output_content.lines())
        results = tuple(nm.OutputResult(ok, d.device, d.info_qualify) for d in body.display_output)
        reply = Message(reply_header, nm.DisplayResponse(results))
        return reply, PoiNotice("display", header.poi_id, lines)
    if isinstance(body, nm.PrintRequest):
        out = body.print_output
        reply = Message(reply_header, nm.PrintResponse(ok, out.document_qualifier))
        notice = PoiNotice(
            "print", header.poi_id, out.output_content.lines(), document=out.document_qualifier
        )
        return reply, notice
    raise NexoFormatError(type(body).__name__, "not something a POI sends to the sale system")
