"""nexo errors: everything a POI sends that the model cannot take raises one of these, never a
KeyError or ValueError, so the adapter can say UNKNOWN/ERROR instead of crashing."""

from __future__ import annotations

from drivers.errors import DriverError, ProtocolError


class NexoFormatError(ProtocolError):
    """A message that is not valid nexo for our model (missing, misplaced or malformed field)."""

    code = "nexo_format_error"

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        self.why = why
        super().__init__(f"{where}: {why}")


class NexoSecurityError(ProtocolError):
    """An Adyen-encrypted message whose key, nonce or HMAC does not check out."""

    code = "nexo_security_error"


class NexoMismatch(ProtocolError):
    """A well-formed response that does not answer our request (ServiceID, category, POIID)."""

    code = "nexo_mismatch"


class NexoTrackerError(DriverError):
    """The service tracker refused an operation (send before store, too many in flight)."""

    code = "nexo_tracker_error"
