"""``evpay doctor``'s acquirer checks: reachability on loopback, the webhook URL, overdue."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drivers.money import Money
from gateway.acquirer.doctor import acquirer_checks
from gateway.acquirer.port import Modification
from gateway.settings import parse_settings
from gateway.store import Store
from tests.acquirer.test_acquirer_settings import config
from tests.helpers import free_port


def test_reachable_webhook_url_and_overdue_outcomes(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    store = Store.open(tmp_path / "evpay.sqlite3")
    try:
        settings = parse_settings(config(f"http://127.0.0.1:{port}/v71"), "<test>")
        found = {c.name: (c.status, c.detail) for c in acquirer_checks(settings, store)}
        assert found["acquirer adyen"] == ("pass", f"127.0.0.1:{port} reachable")
        assert "/acquirer/adyen/notifications" in found["acquirer adyen webhooks"][1]
        assert found["acquirer adyen outcomes"] == (
            "pass",
            "0 queued, 0 awaiting their webhook",
        )
        now = datetime.now(UTC)
        refund = Modification("s1/refund", "refund", "P1", amount=Money(100, "EUR"))
        store.acquirer.enqueue("adyen", refund, now - timedelta(hours=2))
        store.acquirer.received("s1/refund", "X1", now, now - timedelta(seconds=1))
        status, detail = {c.name: (c.status, c.detail) for c in acquirer_checks(settings, store)}[
            "acquirer adyen outcomes"
        ]
        assert status == "fail" and "1 overdue" in detail and "s1/refund" in detail
        closed = parse_settings(config(f"http://127.0.0.1:{free_port()}/v71"), "<test>")
        assert acquirer_checks(closed, None)[0].status == "fail"
    finally:
        listener.close()
        store.close()
