"""Structured logs: one event per line on stdout (journald picks it up), logfmt or JSON.

Call sites log an event name as the message and context as ``extra``:
``_LOGGER.info("worker.crashed", extra={"worker": name, "error": str(exc)})``.
As a last line of defence every rendered line is passed through ``mask_pans``: a run of
13 to 19 digits is shown as first 6 and last 4 only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# A run of 13-19 digits standing alone: one glued to letters is part of an id (a session's hex
# id holds such runs often enough), and masking it would make the log disagree with the store.
_PAN = re.compile(r"(?<![0-9A-Za-z])(\d{6})(\d{3,9})(\d{4})(?![0-9A-Za-z])")
_SYSLOG = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def mask_pans(text: str) -> str:
    return _PAN.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    fields.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        fields["exc"] = f"{type(exc).__name__}: {exc}"
    return fields


def _quote(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t\\'):
        return text
    return json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def __init__(self, journald: bool = False) -> None:
        super().__init__()
        self._journald = journald

    def format(self, record: logging.LogRecord) -> str:
        line = " ".join(f"{k}={_quote(v)}" for k, v in _fields(record).items())
        prefix = f"<{_SYSLOG.get(record.levelno, 6)}>" if self._journald else ""
        return prefix + mask_pans(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_pans(json.dumps(_fields(record), ensure_ascii=False, default=str))


def _under_journald() -> bool:
    """True when stdout is connected to journald (systemd sets JOURNAL_STREAM=dev:ino)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


class RepeatLimit(logging.Filter):
    """At most ``burst`` lines per ``window_s`` of one warning or error (same logger, same
    event): a flood of connections or a failing disk must not fill the journal (72-117 MB a
    minute were seen). The first line after a quiet window says how many were left out
    (``suppressed=N``). At most MAX_KEYS events are tracked; the oldest is forgotten first."""

    MAX_KEYS = 1024

    def __init__(
        self, burst: int = 10, window_s: float = 60.0, clock: Any = time.monotonic
    ) -> None:
        super().__init__()
        self.burst, self.window_s, self._clock = burst, window_s, clock
        self._seen: dict[tuple[str, object], list[float]] = {}  # [window start, shown, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = self._clock()
        key = (record.name, record.msg)
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window_s:
            if entry is not None and entry[2]:
                record.__dict__["suppressed"] = int(entry[2])
            if entry is None and len(self._seen) >= self.MAX_KEYS:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = [now, 1, 0]
            return True
        if entry[1] < self.burst:
            entry[1] += 1
            return True
        entry[2] += 1
        return False


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RepeatLimit())
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter(_under_journald()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
