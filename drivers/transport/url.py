"""One URL grammar for every terminal device, in config and on the command line.

serial:///dev/ttyUSB0?baud=9600&parity=N&stopbits=2   RS-232 or USB CDC-ACM
tcp://10.0.0.5:20007                                   ZVT over IP (no link framing)
usb://0x0403:0x6001  or  usb://bus/1-1.2               raw USB bulk endpoints
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from drivers.errors import DeviceUrlError

_PARITIES = {"N", "E", "O", "M", "S"}
_BAUDS = {1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200}


@dataclass(frozen=True, slots=True)
class SerialUrl:
    path: str
    baud: int = 9600
    parity: str = "N"
    stopbits: int = 2  # ZVT's RS-232 default is 8N2
    kind: Literal["serial"] = "serial"


@dataclass(frozen=True, slots=True)
class TcpUrl:
    host: str
    port: int
    kind: Literal["tcp"] = "tcp"


@dataclass(frozen=True, slots=True)
class UsbUrl:
    vid: int | None = None
    pid: int | None = None
    bus_path: str | None = None  # e.g. "1-1.2": a port on the board, stable across replug
    kind: Literal["usb"] = "usb"


DeviceUrl = SerialUrl | TcpUrl | UsbUrl


def parse_device_url(text: str) -> DeviceUrl:
    """Parse a device URL; DeviceUrlError says which part is wrong and shows valid forms."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "serial":
        if parts.netloc:
            raise DeviceUrlError(f"{text!r}: a serial URL has three slashes: serial:///dev/ttyUSB0")
        return _serial(text, parts.path, dict(parse_qsl(parts.query)))
    if scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or port == 0:
            raise DeviceUrlError(
                f"{text!r}: a TCP device needs host and port, e.g. tcp://10.0.0.5:20007"
            )
        return TcpUrl(parts.hostname, port)
    if scheme == "usb":
        return _usb(text, parts.netloc, parts.path)
    raise DeviceUrlError(
        f"{text!r}: unknown device scheme {parts.scheme!r}; use serial:///dev/ttyUSB0, "
        f"tcp://host:port or usb://VID:PID"
    )


def _serial(text: str, path: str, query: dict[str, str]) -> SerialUrl:
    if not path.startswith("/dev/") and not path.startswith("/"):
        raise DeviceUrlError(
            f"{text!r}: a serial device needs an absolute path, e.g. serial:///dev/ttyUSB0"
        )
    unknown = set(query) - {"baud", "parity", "stopbits"}
    if unknown:
        raise DeviceUrlError(
            f"{text!r}: unknown serial option(s) {sorted(unknown)}; known: baud, parity, stopbits"
        )
    try:
        baud = int(query.get("baud", "9600"))
        stopbits = int(query.get("stopbits", "2"))
    except ValueError:
        raise DeviceUrlError(f"{text!r}: baud and stopbits must be whole numbers") from None
    parity = query.get("parity", "N").upper()
    if baud not in _BAUDS:
        raise DeviceUrlError(f"{text!r}: baud {baud} not supported; use one of {sorted(_BAUDS)}")
    if parity not in _PARITIES:
        raise DeviceUrlError(f"{text!r}: parity must be one of N, E, O, M, S")
    if stopbits not in (1, 2):
        raise DeviceUrlError(f"{text!r}: stopbits must be 1 or 2")
    return SerialUrl(path, baud, parity, stopbits)


def _usb(text: str, netloc: str, path: str) -> UsbUrl:
    if netloc == "bus" and path.strip("/"):
        return UsbUrl(bus_path=path.strip("/"))
    vid_s, sep, pid_s = netloc.partition(":")
    try:
        vid, pid = int(vid_s, 16), int(pid_s, 16)
    except ValueError:
        vid = pid = -1
    if not sep or not (0 <= vid <= 0xFFFF and 0 <= pid <= 0xFFFF):
        raise DeviceUrlError(
            f"{text!r}: use usb://VID:PID in hex (usb://0x0403:0x6001) or usb://bus/1-1.2"
        )
    return UsbUrl(vid=vid, pid=pid)
