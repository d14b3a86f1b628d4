"""The systemd notify socket must never stall the daemon, whatever its reader does."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from gateway.runtime.sdnotify import Notifier


def test_a_reader_that_stops_reading_never_blocks_a_send(tmp_path: Path) -> None:
    """Found under load: the suite's fake systemd stopped reading after READY, the socket's queue
    (10 datagrams) filled with watchdog pings, and the daemon's next ping blocked its event loop,
    so `evpay status` timed out. Now a ping that would block is dropped and counted."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reader:
        reader.bind(str(path))  # bound, never read
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        started = time.monotonic()
        sent = [notifier.send("WATCHDOG=1", wait_s=0) for _ in range(500)]
        assert time.monotonic() - started < 5  # blocking would hang here for ever
        assert any(sent) and not all(sent)  # the queue took some, the rest were dropped
        assert notifier.dropped >= 500 - sum(sent)
        reader.setblocking(False)
        assert reader.recv(64) == b"WATCHDOG=1"  # what was queued arrives intact


def test_a_ready_waits_a_bounded_time_for_a_full_queue(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reader:
        reader.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        while notifier.send("WATCHDOG=1", wait_s=0):
            pass  # fill the queue
        started = time.monotonic()
        assert notifier.send("STOPPING=1", wait_s=0.3) is False
        assert 0.25 < time.monotonic() - started < 5
