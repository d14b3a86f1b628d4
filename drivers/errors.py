"""The drivers' one error hierarchy (drivers must not depend on ``gateway``)."""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error a driver raises on purpose."""

    code = "driver_error"


class DeviceUrlError(DriverError, ValueError):
    """A device URL (``serial://``, ``tcp://``, ``usb://``) is malformed."""

    code = "device_url_invalid"


class AmountError(DriverError, ValueError):
    """An amount or currency given by a person or a peer is not acceptable."""

    code = "amount_invalid"


class TransportError(DriverError):
    code = "transport_error"


class PortOpenFailed(TransportError):
    code = "port_open_failed"


class ConnectionLost(TransportError):
    code = "connection_lost"


class TransportTimeout(TransportError, TimeoutError):
    code = "transport_timeout"


class ProtocolError(DriverError):
    """The peer broke the protocol (bad frame, NAK limit, unexpected message)."""

    code = "protocol_error"


class TerminalBusy(DriverError):
    """The terminal is running another sequence and cannot take a command now."""

    code = "terminal_busy"


class UnknownReference(DriverError, ValueError):
    """A hold reference this terminal cannot name (not one of its protocol's references)."""

    code = "reference_unknown"
