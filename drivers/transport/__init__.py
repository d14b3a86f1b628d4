"""Byte pipes to terminals (serial, TCP, raw USB), named by one URL grammar.

``open_transport`` is the one way from a device URL to a transport; it also says whether the
ZVT serial framing (DLE STX … CRC, ACK/NAK) runs on it: on serial and USB lines yes, on TCP no.
"""

from __future__ import annotations

from drivers.transport.base import Transport
from drivers.transport.url import SerialUrl, TcpUrl, parse_device_url


def open_transport(url: str) -> tuple[Transport, bool]:
    """(transport, serial_framing) for a device URL; DeviceUrlError if it is malformed."""
    parsed = parse_device_url(url)
    if isinstance(parsed, SerialUrl):
        from drivers.transport.serial import SerialTransport

        return SerialTransport(parsed), True
    if isinstance(parsed, TcpUrl):
        from drivers.transport.tcp import TcpTransport

        return TcpTransport(parsed.host, parsed.port), False
    from drivers.transport.usb import UsbTransport

    return UsbTransport(parsed), True
