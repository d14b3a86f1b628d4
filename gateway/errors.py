"""The gateway's one error hierarchy.

Every error carries a stable machine ``code`` (used in logs, metrics and exit codes) and a
message written for the person who has to act on it: what was wrong and what to do.
Expected business outcomes (a declined card, a timeout at the terminal) are engine events,
never exceptions.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code = "gateway_error"
    exit_code = 1


class ConfigError(GatewayError):
    """The configuration is unreadable or invalid; the daemon refuses to start (EX_CONFIG)."""

    code = "config_invalid"
    exit_code = 78

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        if len(problems) == 1:  # one fault, one line
            super().__init__(f"{path}: invalid configuration: {problems[0]}")
            return
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: invalid configuration:\n{lines}")


class BadInput(GatewayError):
    """A command's input is wrong (an amount, a reason, a file that is not what it should be)."""

    code = "bad_input"
    exit_code = 2


class SecretUnavailable(GatewayError):
    """A secret named in the configuration cannot be read."""

    code = "secret_unavailable"
    exit_code = 78


class Unavailable(GatewayError):
    """Something the daemon needs at start is taken or absent (a port in use, the database held
    by another daemon): it refuses to start (EX_UNAVAILABLE)."""

    code = "unavailable"
    exit_code = 69


class StoreError(GatewayError):
    """The durable store cannot be used; nothing was written (EX_IOERR)."""

    code = "store_error"
    exit_code = 74


class StoreFull(StoreError):
    code = "store_full"

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path}: the disk holding the database is full; nothing was written. "
            "Free space on that file system, then restart evpay."
        )


class StoreReadOnly(StoreError):
    code = "store_read_only"

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path}: the database is read-only; nothing was written. "
            "Check the file's owner and mode and that its file system is mounted read-write."
        )


class StoreCorrupt(StoreError):
    code = "store_corrupt"

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            f"{path}: the database file is damaged or not an evpay database ({detail}). "
            "Stop evpay, keep the file for analysis and restore the latest backup."
        )


class SchemaTooNew(StoreError):
    code = "store_schema_too_new"

    def __init__(self, path: str, found: int, known: int) -> None:
        super().__init__(
            f"{path}: the database has schema version {found}, but this evpay knows versions "
            f"up to {known}. It was written by a newer evpay: upgrade evpay (never downgrade "
            "over a live database)."
        )


class UpstreamError(GatewayError):
    """The CPO could not be reached or refused a message."""

    code = "upstream_error"


class UpstreamUnreachable(UpstreamError):
    """No usable answer. ``ambiguous``: the request may have reached the CPO (timeout after
    sending, connection reset), so a POST must be checked with a GET before it is repeated."""

    code = "upstream_unreachable"

    def __init__(self, message: str, *, ambiguous: bool, retry_after: float | None = None) -> None:
        self.ambiguous = ambiguous
        self.retry_after = retry_after  # seconds, from the CPO's Retry-After header
        super().__init__(message)


class OcpiRejected(UpstreamError):
    code = "ocpi_rejected"

    def __init__(self, message: str, *, http_status: int, status_code: int | None) -> None:
        self.http_status = http_status
        self.status_code = status_code
        super().__init__(message)


class StaleRead(StoreError):
    """Another writer committed between a caller's read and its step: read again, then decide.
    The engine host does so at once; nobody else should ever see it."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path}: another process wrote the database since this step was computed; retry it"
        )


class StoreGone(StoreError):
    code = "store_gone"

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path}: the database file was deleted or replaced while the daemon used it; nothing "
            f"more is "
            "acknowledged. Restore the file (or accept the new one) and restart evpay."
        )


class InvariantViolated(GatewayError):
    """A bug: state that must never exist. Crash, let systemd restart, the journal explains."""

    code = "invariant_violated"
    exit_code = 70


class QueueFull(GatewayError):
    """A bounded queue is full: the input is refused, not queued without limit. Nothing was
    stored; the sender may try again (the local API answers 503 with this message)."""

    code = "queue_full"

    def __init__(self, queue: str, bound: int) -> None:
        self.queue = queue
        self.bound = bound
        super().__init__(f"{queue} is full ({bound} waiting); nothing was stored, try again later")


class AcquirerError(GatewayError):
    """The acquirer's online API refused or could not take a modification. Never an outcome:
    outcomes arrive only as the acquirer's webhooks."""

    code = "acquirer_error"


class AcquirerUnreachable(AcquirerError):
    """No usable answer. ``ambiguous``: the request may have been applied (timeout after sending,
    connection reset); sending it again with the same idempotency key is safe."""

    code = "acquirer_unreachable"

    def __init__(self, message: str, *, ambiguous: bool) -> None:
        self.ambiguous = ambiguous
        super().__init__(message)


class AcquirerRejected(AcquirerError):
    """The acquirer answered and refused the request (4xx/5xx with its error code)."""

    code = "acquirer_rejected"

    def __init__(self, message: str, *, http_status: int, error_code: str | None) -> None:
        self.http_status = http_status
        self.error_code = error_code
        super().__init__(message)


class ModificationRefused(AcquirerError):
    """We refuse a modification before it is sent (a capture above the authorised amount, a
    currency that is not the authorisation's): nothing left the gateway."""

    code = "modification_refused"
    exit_code = 2
