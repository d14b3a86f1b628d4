"""nexo XML (``SaleToPOIRequest``/``SaleToPOIResponse`` as the XSD defines them): bytes in, model
out, and back. Elements are written in declaration order, which is the schema's sequence order.

A DOCTYPE is refused outright (no entity tricks from a device on the LAN); anything the model
does not declare is kept verbatim in ``extra``; a missing mandatory field, a wrong scalar or an
unknown body is a ``NexoFormatError``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from drivers.nexo.binding import (
    Extra,
    build,
    check_envelope,
    has_extra,
    scalar_from_text,
    scalar_to_text,
    slots_of,
)
from drivers.nexo.errors import NexoFormatError, NexoSecurityError
from drivers.nexo.messages import BODIES, Message, is_request_body
from drivers.nexo.model import MessageHeader

CONTENT_TYPE = "application/xml; charset=utf-8"
MAX_XML_BYTES = 256 * 1024  # a nexo message is a few kB; anything larger is refused unread


def encode(message: Message) -> bytes:
    root = ET.Element(message.root)
    root.append(_to_xml(message.header, "MessageHeader"))
    root.append(_to_xml(message.body, type(message.body).__name__))
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def decode(data: bytes) -> Message:
    if len(data) > MAX_XML_BYTES:
        raise NexoFormatError("xml", f"{len(data)} bytes is more than {MAX_XML_BYTES}")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise NexoFormatError("xml", "a DOCTYPE or ENTITY is not accepted")
    try:
        root = ET.fromstring(data)  # noqa: S314 - DOCTYPE/ENTITY refused above
    except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: unknown encoding
        raise NexoFormatError("xml", f"not well-formed: {exc}") from None
    if root.tag not in ("SaleToPOIRequest", "SaleToPOIResponse"):
        raise NexoFormatError("xml", f"root {root.tag!r} is not SaleToPOIRequest/Response")
    children = list(root)
    if children and children[-1].tag == "SecurityTrailer":
        raise NexoSecurityError(f"{root.tag} carries a nexo CMS SecurityTrailer: not supported")
    if len(children) != 2 or children[0].tag != "MessageHeader":
        raise NexoFormatError(root.tag, "expected MessageHeader and exactly one body")
    header = _from_xml(MessageHeader, children[0], "MessageHeader")
    body_el = children[1]
    if body_el.tag not in BODIES:
        raise NexoFormatError(root.tag, f"unsupported body {body_el.tag!r}")
    cls, category = BODIES[body_el.tag]
    if root.tag.endswith("Request") != is_request_body(body_el.tag):
        raise NexoFormatError(root.tag, f"{body_el.tag} in {root.tag}")
    check_envelope(root.tag, header, body_el.tag, category)
    return Message(header, _from_xml(cls, body_el, body_el.tag))


def _to_xml(obj: Any, name: str) -> ET.Element:
    el = ET.Element(name)
    for slot in slots_of(type(obj)):
        value = getattr(obj, slot.attr)
        if value is None or (slot.many and not value):
            continue
        if slot.kind == "attr":
            el.set(slot.nexo, " ".join(value) if slot.many else scalar_to_text(value))
        elif slot.kind == "content":
            el.text = value
        elif slot.kind in ("text", "listtext"):
            ET.SubElement(el, slot.nexo).text = (
                " ".join(value) if slot.many else scalar_to_text(value)
            )
        elif slot.kind == "texts":
            for item in value:
                ET.SubElement(el, slot.nexo).text = scalar_to_text(item)
        elif slot.kind == "elem":
            el.append(_to_xml(value, slot.nexo))
        else:  # elems
            for item in value:
                el.append(_to_xml(item, slot.nexo))
    for extra in getattr(obj, "extra", ()):
        if extra.encoding == "xml":
            el.append(ET.fromstring(extra.raw))  # noqa: S314 - our own earlier serialisation
        elif extra.encoding == "xml-attr":
            el.set(extra.name, extra.raw)
    return el


def _from_xml(cls: type, el: ET.Element, where: str) -> Any:
    values: dict[str, Any] = {}
    known_attrs: set[str] = set()
    known_children: set[str] = set()
    for slot in slots_of(cls):
        here = f"{where}.{slot.nexo}"
        if slot.kind == "attr":
            known_attrs.add(slot.nexo)
            if slot.nexo in el.attrib:
                raw = el.attrib[slot.nexo]
                values[slot.attr] = (
                    tuple(raw.split()) if slot.many else scalar_from_text(here, slot.target, raw)
                )
            continue
        if slot.kind == "content":
            values[slot.attr] = el.text or ""
            continue
        known_children.add(slot.nexo)
        found = el.findall(slot.nexo)
        if not found:
            continue
        if slot.kind in ("text", "listtext", "elem") and len(found) > 1:
            raise NexoFormatError(here, "occurs more than once")
        if slot.kind == "text":
            values[slot.attr] = scalar_from_text(here, slot.target, found[0].text or "")
        elif slot.kind == "listtext":
            values[slot.attr] = tuple((found[0].text or "").split())
        elif slot.kind == "texts":
            values[slot.attr] = tuple(
                scalar_from_text(here, slot.target, c.text or "") for c in found
            )
        elif slot.kind == "elem":
            values[slot.attr] = _from_xml(slot.target, found[0], here)
        else:
            values[slot.attr] = tuple(_from_xml(slot.target, c, here) for c in found)
    order = [s.nexo for s in slots_of(cls) if s.kind not in ("attr", "content")]
    seen = [order.index(c.tag) for c in el if c.tag in known_children]
    if seen != sorted(seen):
        raise NexoFormatError(where, "elements are not in the schema's order")
    unknown = [Extra(k, v, "xml-attr") for k, v in el.attrib.items() if k not in known_attrs] + [
        Extra(c.tag, ET.tostring(c, encoding="unicode").strip(), "xml")
        for c in el
        if c.tag not in known_children
    ]
    if unknown:
        if not has_extra(cls):
            raise NexoFormatError(where, f"unexpected {', '.join(x.name for x in unknown)}")
        values["extra"] = tuple(unknown)
    return build(cls, where, values)
