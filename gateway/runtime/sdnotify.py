"""The systemd notify protocol, by hand (it is one datagram per message).

READY=1 when every worker has started, STATUS= for ``systemctl status``, WATCHDOG=1 from a
task on the event loop (so a stalled loop stops the pings by itself), STOPPING=1 on the way
out. Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

_LOGGER = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_usec = self._watchdog(env)

    @staticmethod
    def _watchdog(env: os._Environ[str] | dict[str, str]) -> int | None:
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value if value > 0 else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the period systemd allows, or None when not armed."""
        return self._watchdog_usec / 2_000_000 if self._watchdog_usec else None

    def send(self, *fields: str) -> bool:
        if not self._address:
            return False
        message = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            _LOGGER.warning("sdnotify.failed", extra={"error": str(exc)})
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")
