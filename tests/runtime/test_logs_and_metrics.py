from __future__ import annotations

import json
import logging

import pytest

from gateway.runtime import logs
from gateway.runtime.logs import JsonFormatter, LogfmtFormatter, mask_pans
from gateway.runtime.metrics import Metrics


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gateway.test", logging.INFO, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return record


def test_pans_are_masked_first6_last4() -> None:
    assert mask_pans("card 5413330089020074 ok") == "card 541333******0074 ok"
    assert mask_pans("12345") == "12345"
    assert mask_pans("t=1764000000") == "t=1764000000"  # 10 digits: not a PAN
    sid = "24d319f1714870943399fcf55957e0c4"  # a session's hex id with a 13-digit run: kept whole, as stored
    assert mask_pans(f"session={sid}") == f"session={sid}"
    assert mask_pans('"pan": "5413330089020074"') == '"pan": "541333******0074"'


def test_logfmt_one_line_with_context_and_no_pan() -> None:
    line = LogfmtFormatter().format(
        _record("card.read", terminal="t1", note="a b\nc", raw="4111111111111111")
    )
    assert "\n" not in line
    assert "event=card.read" in line and "terminal=t1" in line and 'note="a b\\nc"' in line
    assert "4111111111111111" not in line and "411111******1111" in line


def test_journald_prefix_carries_the_priority() -> None:
    assert LogfmtFormatter(journald=True).format(_record("x")).startswith("<6>")


def test_json_lines() -> None:
    data = json.loads(JsonFormatter().format(_record("outbox.sent", message_id="m1")))
    assert data["event"] == "outbox.sent" and data["message_id"] == "m1" and data["level"] == "info"


def test_metrics_text_format() -> None:
    m = Metrics()
    m.describe("evpay_things_total", "counter", "things")
    m.inc("evpay_things_total", kind='a"b')
    m.inc("evpay_things_total", kind='a"b')
    m.add_collector(lambda mm: mm.set("evpay_gauge", 2.5))
    text = m.render()
    assert '# TYPE evpay_things_total counter\nevpay_things_total{kind="a\\"b"} 2\n' in text
    assert "evpay_gauge 2.5" in text


def test_a_repeated_error_is_rate_limited_and_says_how_many_were_left_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 27: a slow-loris flood grew the log by 72-117 MB a minute."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("info", "logfmt")
    try:
        log = logging.getLogger("gateway.test_flood")
        for _ in range(10_000):
            log.error("api.error", extra={"path": "/evses/E1/pay"})
        log.info("api.ok")  # info lines are the normal flow: never limited
        lines = capsys.readouterr().out.splitlines()
        assert sum("event=api.error" in line for line in lines) <= 10
        assert any("event=api.ok" in line for line in lines)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    now = [0.0]
    limit = logs.RepeatLimit(burst=2, window_s=60.0, clock=lambda: now[0])
    record = _record("store.full")
    record.levelno = logging.ERROR
    assert [limit.filter(record) for _ in range(5)] == [True, True, False, False, False]
    now[0] = 61.0
    assert limit.filter(record) and record.__dict__["suppressed"] == 3
