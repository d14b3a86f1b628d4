"""The systemd notify protocol, by hand (it is one datagram per message).

READY=1 when every worker has started, STATUS= for ``systemctl status``, WATCHDOG=1 from a
task on the event loop (so a stalled loop stops the pings by itself), STOPPING=1 on the way
out. Without NOTIFY_SOCKET every call is a no-op.

Every send is non-blocking: a unix datagram socket whose reader is slow holds only a few
messages (net.unix.max_dgram_qlen, 10 by default), and a blocking sendto then stalls the whole
event loop, API and payments included. A message that would block is dropped and counted
(systemd reads promptly; a stalled reader must not stall the payments). READY, STATUS and
STOPPING matter more than a ping: they wait up to ``NOTIFY_WAIT_S`` for room, never longer.
"""

from __future__ import annotations

import logging
import os
import socket

_LOGGER = logging.getLogger(__name__)

NOTIFY_WAIT_S = 1.0  # the longest a READY/STATUS/STOPPING waits for the reader; a ping never waits


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_usec = self._watchdog(env)
        self.dropped = 0  # messages dropped because the reader's queue was full

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

    def send(self, *fields: str, wait_s: float = NOTIFY_WAIT_S) -> bool:
        if not self._address:
            return False
        message = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(max(wait_s, 0.0))  # 0: non-blocking
                sock.sendto(message, self._address)
        except (BlockingIOError, TimeoutError):
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:  # said once, then every 100th
                _LOGGER.warning("sdnotify.dropped", extra={"dropped": self.dropped})
            return False
        except OSError as exc:
            _LOGGER.warning("sdnotify.failed", extra={"error": str(exc)})
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1", wait_s=0)

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")
