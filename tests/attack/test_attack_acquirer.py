"""Adversarial probes against the acquirer wiring (issue 29: Adyen modifications online, booked
only on an HMAC-signed webhook), written by a session that did not write it (attack-acquirer).

Two rigs, both real: the loopback rig of tests/acquirer/rig.py (simulated Adyen on loopback,
our webhook receiver on a real aiohttp server, a real SQLite store, the Adyen acquirer and its
forwarder; only time is fake) for the book and the receiver, and the daemon rig of
tests/acquirer/test_e2e_acquirer.py (the daemon, the nexo POI simulator, the simulated Adyen and
the CPO simulator) for what the engine books. A probe that holds stays as a guard."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from drivers.money import Money
from gateway.acquirer import adyen_requests
from gateway.acquirer.adyen_client import AdyenAcquirer
from gateway.acquirer.adyen_webhook import hmac_key_bytes, signed_item
from gateway.acquirer.forwarding import Forwarder
from gateway.acquirer.port import Modification
from gateway.errors import ConfigError
from gateway.ocpi.server import PtpServer
from gateway.settings import check_secrets, parse_settings
from gateway.store import Store
from tests.acquirer import rig as acq
from tests.acquirer.rig import API_KEY, DEADLINE, HMAC_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER
from tests.acquirer.test_acquirer_settings import config as settings_text
from tests.acquirer.test_e2e_acquirer import Open, post_webhook, rigs  # noqa: F401 - fixture

EUR = "EUR"
PAYMENT = "8800000000000042"
AUTH = "Basic " + base64.b64encode(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}".encode()).decode()
FIRST_PSP = "8815000000000001"  # the simulator's first modification reference


def capture(key: str = "s1:capture:h1", amount: int = 595, payment: str = PAYMENT) -> Modification:
    return Modification(
        key, "capture", payment, amount=Money(amount, EUR), authorised=Money(5000, EUR)
    )


def refund(key: str = "s1:refund:r1", amount: int = 200, payment: str = PAYMENT) -> Modification:
    return Modification(key, "refund", payment, amount=Money(amount, EUR))


def item(
    code: str,
    psp: str,
    *,
    merchant_ref: str = "",
    original: str = PAYMENT,
    amount: int | None = 595,
    currency: str = EUR,
    success: bool = True,
    account: str = "EVPayTest",
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "eventCode": code,
        "pspReference": psp,
        "originalReference": original,
        "merchantAccountCode": account,
        "merchantReference": merchant_ref,
        "success": "true" if success else "false",
        "eventDate": "2026-12-07T12:00:00+01:00",
        "reason": "",
    }
    if amount is not None:
        found["amount"] = {"value": amount, "currency": currency}
    return found


def payload(*items: dict[str, Any], key: str = HMAC_KEY, sign: bool = True) -> bytes:
    signed = [signed_item(i, hmac_key_bytes(key)) if sign else i for i in items]
    return json.dumps(
        {"live": "false", "notificationItems": [{"NotificationRequestItem": i} for i in signed]}
    ).encode()


async def post(url: str, data: bytes, auth: str = AUTH) -> tuple[int, str]:
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.post(url, data=data, headers=headers) as r:
        return r.status, await r.text()


async def received(r: acq.Rig, modification: Modification) -> str:
    """Submit and drain (the simulator loses its webhook): the acquirer's reference."""
    assert r.forwarder.submit(modification)
    assert (await r.forwarder.drain()).received == 1
    stored = r.store.acquirer.get(modification.command_key)
    assert stored is not None and stored.status == "received" and stored.acquirer_reference
    return stored.acquirer_reference


# ---- authenticity and form of the webhook ---------------------------------------------------


async def test_a_webhook_signed_with_another_key_is_refused_and_not_stored(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        bad = payload(item("CAPTURE", psp, merchant_ref="s1:capture:h1"), key="11" * 32)
        status, text = await post(r.webhook_url, bad)
        assert status == 400 and "signature" in text
        assert r.store.acquirer.notifications("adyen") == []
        assert r.status("s1:capture:h1") == "received"


async def test_a_webhook_without_a_signature_is_refused(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        bare = payload(item("CAPTURE", psp, merchant_ref="s1:capture:h1"), sign=False)
        assert (await post(r.webhook_url, bare))[0] == 400
        assert r.status("s1:capture:h1") == "received"


async def test_signed_fields_changed_after_signing_are_refused(tmp_path: Path) -> None:
    """A CAPTURE_FAILED turned into CAPTURE, success flipped, amount raised: each refused."""
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        key = hmac_key_bytes(HMAC_KEY)
        base = signed_item(item("CAPTURE_FAILED", psp, merchant_ref="s1:capture:h1"), key)
        for change in (
            {"eventCode": "CAPTURE"},
            {"success": "false"},
            {"amount": {"value": 1000, "currency": EUR}},
            {"merchantAccountCode": "Other"},
        ):
            data = json.dumps({"notificationItems": [{"NotificationRequestItem": base | change}]})
            status, _ = await post(r.webhook_url, data.encode())
            assert status == 400, change
        assert r.store.acquirer.notifications("adyen") == []


async def test_wrong_or_missing_basic_credentials_are_refused_before_parsing(
    tmp_path: Path,
) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        good = payload(item("CAPTURE", psp, merchant_ref="s1:capture:h1"))
        wrong = "Basic " + base64.b64encode(f"{WEBHOOK_USER}:guess".encode()).decode()
        for auth in ("", wrong, AUTH + "x", "Bearer " + WEBHOOK_PASSWORD):
            assert (await post(r.webhook_url, good, auth=auth))[0] == 401
        assert r.status("s1:capture:h1") == "received"


async def test_an_authorization_header_that_is_not_utf8_is_a_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with acq.rig(tmp_path) as r:
        url = urlsplit(r.webhook_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(
            b"POST " + url.path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Basic \xff\xfe\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        await writer.drain()
        answer = await reader.read(200)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer
    assert "acquirer.webhook_error" not in caplog.text


async def test_a_non_ascii_signature_is_refused_not_retried(tmp_path: Path) -> None:
    async with acq.rig(tmp_path) as r:
        forged = item("CAPTURE", "8815000000000111")
        forged["additionalData"] = {"hmacSignature": "\u00e9" * 44}
        status, text = await post(r.webhook_url, payload(forged, sign=False))
        assert status == 400 and "signature" in text, (status, text)


async def test_an_amount_beyond_64_bits_is_refused_not_retried(tmp_path: Path) -> None:
    async with acq.rig(tmp_path) as r:
        huge = item("CAPTURE", "8815000000000112", amount=10**30)
        status, _ = await post(r.webhook_url, payload(huge))
        assert status == 400
        assert r.store.acquirer.notifications("adyen") == []


async def test_a_body_above_the_limit_is_refused_on_the_ocpi_server(tmp_path: Path) -> None:
    """Mounted as the daemon mounts it (on the OCPI server's app): 300 kB is refused (413),
    never stored, never a 500. (The receiver's own MAX_BODY is ignored by aiohttp for a
    sub-application; the OCPI server's bound applies.)"""
    store = Store.open(tmp_path / "evpay.sqlite3")
    clock = acq.Clock()
    app = PtpServer(store, "token-b-0123456789", "http://127.0.0.1", "SITE", clock).app()
    path = acq.receiver(store, clock).mount(app)
    async with acq.serving(app) as port:
        filler = item("REPORT_AVAILABLE", "8815000000000999", amount=None)
        filler["reason"] = "x" * (300 * 1024)
        status, _ = await post(f"http://127.0.0.1:{port}{path}", payload(filler))
        assert status == 413
        assert store.acquirer.notifications("adyen") == []
    store.close()


async def test_a_deeply_nested_body_is_a_400_not_a_retry(tmp_path: Path) -> None:
    """Nesting within the size limit makes json.loads raise RecursionError; the answer must say
    the request is bad (400), not 'not stored; send it again' (503), which Adyen retries."""
    async with acq.rig(tmp_path) as r:
        deep = b'{"notificationItems": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        status, text = await post(r.webhook_url, deep)
        assert status == 400, (status, text)


async def test_a_batch_with_one_bad_item_is_refused_whole(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        good = signed_item(
            item("CAPTURE", psp, merchant_ref="s1:capture:h1"), hmac_key_bytes(HMAC_KEY)
        )
        bad = signed_item(item("REFUND", "8815000000000777"), hmac_key_bytes("22" * 32))
        data = json.dumps(
            {"notificationItems": [{"NotificationRequestItem": x} for x in (good, bad)]}
        ).encode()
        assert (await post(r.webhook_url, data))[0] == 400
        assert r.store.acquirer.notifications("adyen") == []
        assert r.status("s1:capture:h1") == "received"  # nothing of the batch applied


async def test_an_amount_that_is_not_an_integer_is_refused(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        for value in (5.95, "595", True, None):
            bad = item("CAPTURE", psp, merchant_ref="s1:capture:h1")
            bad["amount"] = {"value": value, "currency": EUR}
            assert (await post(r.webhook_url, payload(bad)))[0] == 400, value
        assert r.status("s1:capture:h1") == "received"


# ---- what a valid webhook may settle ---------------------------------------------------------


async def test_a_webhook_for_another_merchant_account_settles_nothing(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        other = item("CAPTURE", psp, merchant_ref="s1:capture:h1", account="SomeoneElse")
        assert await post(r.webhook_url, payload(other)) == (200, "[accepted]")
        assert r.status("s1:capture:h1") == "received"


async def test_a_capture_webhook_for_another_amount_does_not_confirm(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture(amount=595))
        more = item("CAPTURE", psp, merchant_ref="s1:capture:h1", amount=1000)
        assert await post(r.webhook_url, payload(more)) == (200, "[accepted]")
        assert r.status("s1:capture:h1") == "received"


async def test_a_capture_webhook_in_another_currency_does_not_confirm(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture(amount=595))
        chf = item("CAPTURE", psp, merchant_ref="s1:capture:h1", currency="CHF")
        assert await post(r.webhook_url, payload(chf)) == (200, "[accepted]")
        assert r.status("s1:capture:h1") == "received"


async def test_a_refund_webhook_for_more_than_we_refunded_does_not_confirm(
    tmp_path: Path,
) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, refund(amount=200))
        more = item("REFUND", psp, merchant_ref="s1:refund:r1", amount=500)
        assert await post(r.webhook_url, payload(more)) == (200, "[accepted]")
        assert r.status("s1:refund:r1") == "received"


async def test_a_back_office_refund_does_not_settle_our_queued_refund(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}, start_sim=False) as r:
        assert r.forwarder.submit(refund(amount=200))
        assert (await r.forwarder.drain()).waiting == 1  # the uplink is down: queued
        theirs = item("REFUND", "8815000000000555", merchant_ref="back-office-1", amount=200)
        assert await post(r.webhook_url, payload(theirs)) == (200, "[accepted]")
        assert r.status("s1:refund:r1") == "queued"
        await r.sim.start("127.0.0.1", r.sim_port)
        assert (await r.forwarder.drain()).received == 1
        assert [m["what"] for m in r.sim.state.applied] == ["refunds"]


async def test_our_reference_on_another_payment_does_not_settle_ours(tmp_path: Path) -> None:
    """A CAPTURE carrying our reference but naming another payment (another site on the same
    merchant account, a reused reference) is not our capture's outcome."""
    async with acq.rig(tmp_path, {"lost"}) as r:
        await received(r, capture())
        elsewhere = item(
            "CAPTURE", "8815000000000444", merchant_ref="s1:capture:h1", original="8800000000000999"
        )
        assert await post(r.webhook_url, payload(elsewhere)) == (200, "[accepted]")
        assert r.status("s1:capture:h1") == "received"


async def test_an_adjustment_for_another_total_or_a_capture_without_amount_confirms_nothing(
    tmp_path: Path,
) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        update = Modification("s1:topup:h1", "amount_update", PAYMENT, amount=Money(4000, EUR))
        psp = await received(r, update)
        less = item("AUTHORISATION_ADJUSTMENT", psp, merchant_ref="s1:topup:h1", amount=3000)
        assert await post(r.webhook_url, payload(less)) == (200, "[accepted]")
        assert r.status("s1:topup:h1") == "received"
        psp2 = await received(r, capture("s2:capture:h1", payment="8800000000000043"))
        bare = item(
            "CAPTURE", psp2, merchant_ref="s2:capture:h1", original="8800000000000043", amount=None
        )
        assert await post(r.webhook_url, payload(bare)) == (200, "[accepted]")
        assert r.status("s2:capture:h1") == "received"
        # the evidence is kept: reconciliation sees the unclaimed capture
        since = r.clock.now - timedelta(minutes=1)
        (unclaimed,) = r.store.acquirer.unclaimed(since, r.clock.now + timedelta(minutes=1))
        assert unclaimed.psp_reference == psp2


async def test_an_event_for_another_merchant_account_is_not_stored(tmp_path: Path) -> None:
    async with acq.rig(tmp_path) as r:
        other = item("CAPTURE", "8815000000000333", account="SomeoneElse")
        assert await post(r.webhook_url, payload(other)) == (200, "[accepted]")
        assert r.store.acquirer.notifications("adyen") == []


def test_the_acquirer_api_is_never_plain_http_beyond_loopback() -> None:
    for url in ("http://10.0.0.5/v71", "http://adyen.example/v71", "ftp://127.0.0.1/v71"):
        with pytest.raises(ValueError, match=r"https|not an http"):
            acq.acquirer_settings(url)
    assert acq.acquirer_settings("https://checkout-test.adyen.com/v71").base_url.endswith("v71")


def test_a_guessable_webhook_password_or_short_hmac_key_is_a_config_problem() -> None:
    """The webhook's Basic password and HMAC key are all that stand between the LAN and our
    book: `evpay config validate` / doctor must refuse "pw" and a 1-byte key, as they refuse a
    short API client token; the secrets themselves never appear in the message."""
    weak = parse_settings(settings_text(hmac="AB"), "<probe>")
    problems = check_secrets(weak)
    assert any(p.startswith("acquirers.adyen.webhook_password: too short") for p in problems)
    assert any(p.startswith("acquirers.adyen.hmac_key: too short") for p in problems)
    strong = settings_text(hmac=HMAC_KEY).replace('"pw"', f'"{WEBHOOK_PASSWORD}"')
    assert not [
        p
        for p in check_secrets(parse_settings(strong, "<probe>"))
        if "adyen" in p and "api_key" not in p
    ]


def test_the_webhook_url_given_to_the_acquirer_is_https() -> None:
    """The URL doctor tells the operator to configure at Adyen is public_url's: plain http is
    refused unless the lab setting allow_insecure_http says so (the Basic password would
    travel in clear). Where the listener itself has no certificate, a TLS proxy is assumed."""
    plain = settings_text(hmac=HMAC_KEY).replace(
        'listen = "127.0.0.1:8443"',
        'listen = "127.0.0.1:8443"\npublic_url = "http://gw.example/ocpi/versions"',
    )
    with pytest.raises(ConfigError, match="public_url must be https"):
        parse_settings(plain, "<probe>")


async def test_a_webhook_for_an_unknown_reference_is_accepted_and_kept(tmp_path: Path) -> None:
    async with acq.rig(tmp_path) as r:
        stray = item("CAPTURE", "8815000000000999", original="8800000000000999")
        assert await post(r.webhook_url, payload(stray)) == (200, "[accepted]")
        (note,) = r.store.acquirer.notifications("adyen")
        assert note["command_key"] is None and note["psp_reference"] == "8815000000000999"


async def test_an_event_of_another_kind_does_not_settle_a_capture(tmp_path: Path) -> None:
    """CANCELLATION, REFUND or TECHNICAL_CANCEL with the capture's references: not its outcome."""
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        for code in ("CANCELLATION", "TECHNICAL_CANCEL", "REFUND", "AUTHORISATION_ADJUSTMENT"):
            other = item(code, psp, merchant_ref="s1:capture:h1")
            assert await post(r.webhook_url, payload(other)) == (200, "[accepted]")
        assert r.status("s1:capture:h1") == "received"


async def test_a_refused_capture_is_a_failure_as_capture_failed_is(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        refused = item("CAPTURE", psp, merchant_ref="s1:capture:h1", success=False)
        assert await post(r.webhook_url, payload(refused)) == (200, "[accepted]")
        assert r.status("s1:capture:h1") == "failed"
        psp2 = await received(r, capture("s2:capture:h1", payment="8800000000000043"))
        failed = item(
            "CAPTURE_FAILED", psp2, merchant_ref="s2:capture:h1", original="8800000000000043"
        )
        assert await post(r.webhook_url, payload(failed)) == (200, "[accepted]")
        assert r.status("s2:capture:h1") == "failed"


async def test_a_replayed_old_webhook_is_counted_and_changes_nothing(tmp_path: Path) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        done = payload(item("CAPTURE", psp, merchant_ref="s1:capture:h1"))
        assert await post(r.webhook_url, done) == (200, "[accepted]")
        r.clock.now += timedelta(days=3)
        for _ in range(3):
            assert await post(r.webhook_url, done) == (200, "[accepted]")
        assert r.status("s1:capture:h1") == "confirmed"
        (note,) = r.store.acquirer.notifications("adyen")
        assert note["repeats"] == 3
        assert r.store.acquirer.settled_since(r.clock.now) == []  # nothing settled again


async def test_a_webhook_before_our_row_exists_settles_when_the_answer_is_recorded(
    tmp_path: Path,
) -> None:
    """The CAPTURE arrives before anything of ours is in the book (kept unmatched); the capture
    is then stored, sent and answered with that pspReference: the kept webhook settles it."""
    async with acq.rig(tmp_path, {"lost"}) as r:
        early = item("CAPTURE", FIRST_PSP, merchant_ref="s1:capture:h1")
        assert await post(r.webhook_url, payload(early)) == (200, "[accepted]")
        assert r.forwarder.submit(capture())
        assert (await r.forwarder.drain()).received == 1
        assert r.status("s1:capture:h1") == "confirmed"
        (note,) = r.store.acquirer.notifications("adyen")
        assert note["command_key"] == "s1:capture:h1"


async def test_a_capture_webhook_racing_the_201_settles_once_and_is_not_resent(
    tmp_path: Path,
) -> None:
    """The acquirer applies the capture and its webhook arrives, but the 201 is lost: the
    webhook (matched by our reference) settles it; no second capture is sent."""
    async with acq.rig(tmp_path, {"response_lost"}) as r:
        assert r.forwarder.submit(capture())
        await r.forwarder.drain()
        await r.sim.settle()
        assert r.status("s1:capture:h1") == "confirmed"
        await r.forwarder.drain()
        await r.forwarder.drain()
        assert len(r.sim.state.applied) == 1


async def test_the_webhook_exactly_at_the_deadline_settles_and_ends_the_finding(
    tmp_path: Path,
) -> None:
    async with acq.rig(tmp_path, {"lost"}) as r:
        psp = await received(r, capture())
        r.clock.now += DEADLINE  # exactly the deadline
        (due,) = r.store.acquirer.overdue(r.clock())
        assert due.modification.command_key == "s1:capture:h1"
        done = payload(item("CAPTURE", psp, merchant_ref="s1:capture:h1"))
        assert await post(r.webhook_url, done) == (200, "[accepted]")
        assert r.status("s1:capture:h1") == "confirmed"
        assert r.store.acquirer.overdue(r.clock()) == []


async def test_idempotency_keys_are_stable_and_distinct_per_session(tmp_path: Path) -> None:
    """Two sessions capturing the same amount on the same payment reference get two keys; the
    same command after a restart (a new store handle) gets the same key, and one capture."""
    one = adyen_requests.build(capture("s1:capture:h1"), merchant_account="EVPayTest")
    two = adyen_requests.build(capture("s2:capture:h1"), merchant_account="EVPayTest")
    again = adyen_requests.build(capture("s1:capture:h1"), merchant_account="EVPayTest")
    assert one.headers["Idempotency-Key"] != two.headers["Idempotency-Key"]
    assert one.headers["Idempotency-Key"] == again.headers["Idempotency-Key"]
    assert len(one.headers["Idempotency-Key"]) <= adyen_requests.IDEMPOTENCY_KEY_MAX
    async with acq.rig(tmp_path, {"response_lost"}) as r:
        r.forwarder.submit(capture("s1:capture:h1"))
        r.forwarder.submit(capture("s2:capture:h1"))
        for _ in range(3):
            await r.forwarder.drain()
        keys = [m["key"] for m in r.sim.state.applied]
        assert sorted(keys) == sorted(
            {one.headers["Idempotency-Key"], two.headers["Idempotency-Key"]}
        )


async def test_an_unreadable_2xx_answer_is_not_a_refusal(tmp_path: Path) -> None:
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Idempotency-Key", ""))
        return web.Response(status=201, text="<html>OK</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v71/payments/{psp}/{what}", proxy)
    clock = acq.Clock()
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    async with acq.serving(app) as port, aiohttp.ClientSession() as http:
        settings = acq.acquirer_settings(f"http://127.0.0.1:{port}/v71")
        acquirer = AdyenAcquirer("adyen", settings, http)
        forwarder = Forwarder(store.acquirer, acquirer, clock, webhook_deadline=DEADLINE)
        forwarder.submit(capture())
        await forwarder.drain()
        stored = store.acquirer.get("s1:capture:h1")
        assert stored is not None and stored.status == "queued", stored
        await forwarder.drain()
        assert len(seen) == 2 and seen[0] == seen[1]  # the same Idempotency-Key again
    store.close()


async def test_a_capture_above_the_hold_is_never_sent(tmp_path: Path) -> None:
    async with acq.rig(tmp_path) as r:
        with pytest.raises(Exception, match="above the authorised"):
            capture(amount=5001)
        assert r.sim.state.applied == []


async def test_secrets_never_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole cycle with refusals of every kind: the API key, the HMAC key and the webhook
    password appear in no log message and no log record's fields."""
    caplog.set_level(logging.DEBUG)
    async with acq.rig(tmp_path, {"slow"}) as r:
        r.sim.state.api_key = "another"
        r.forwarder.submit(capture())
        await r.forwarder.drain()
        r.sim.state.api_key = API_KEY
        await r.forwarder.drain()
        await r.sim.settle()
        await post(r.webhook_url, payload(item("CAPTURE", "1"), key="11" * 32))
        await post(r.webhook_url, b"{}", auth="Basic " + base64.b64encode(b"a:b").decode())
        await post(r.webhook_url, b"[" * 5000)
    dumped = "\n".join(f"{rec.getMessage()} {rec.__dict__!r}" for rec in caplog.records)
    for secret in (API_KEY, HMAC_KEY, WEBHOOK_PASSWORD, AUTH.split()[1]):
        assert secret not in dumped and secret.lower() not in dumped.lower()


# ---- the daemon: what the engine books -------------------------------------------------------


async def test_a_capture_webhook_for_another_amount_is_not_booked(rigs: Open) -> None:  # noqa: F811
    rig = await rigs(frozenset({"lost"}), deadline=2.0)
    site = await rig.start()
    await rig.plug(site)
    await site.wait_state("capturing")
    async with asyncio.timeout(20):
        while not rig.captures():
            await asyncio.sleep(0.05)
    (applied,) = rig.captures()
    await post_webhook(
        rig, "CAPTURE", {**applied, "amount": {"value": 1000, "currency": EUR}}, success=True
    )
    row = await site.wait_state("completed", "capture_unconfirmed")
    assert row["state"] == "capture_unconfirmed", row["data"]["notes"]
    assert not rig.cpo.state.facs
    _, out = await rig.evpay("reconcile")  # both sides of the contradiction are findings
    assert "missing_webhook" in out and f"unclaimed_webhook:{applied['pspReference']}" in out


async def test_two_refunds_of_one_session_are_never_two_at_the_acquirer(
    rigs: Open,  # noqa: F811
) -> None:
    """`evpay sessions refund` twice while the first waits for its webhook, then one above
    what is left: one refund at the acquirer, the others refused with the reason."""
    rig = await rigs(frozenset({"slow"}), slow_s=3.0)
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed", timeout=40)
    first = asyncio.create_task(
        rig.evpay(
            "sessions", "refund", row["id"], "--amount", "5.00", "--reason", "a", "--wait", "20"
        )
    )
    await asyncio.sleep(1.0)
    code, out = await rig.evpay(
        "sessions", "refund", row["id"], "--amount", "5.00", "--reason", "b", "--wait", "2"
    )
    # the one in flight counts: the engine's rule refuses a second, at once in the CLI when the
    # first is on the session already, else when the daemon takes the stored request
    assert code != 0 and ("another refund" in out or "status refused" in out), out
    code1, out1 = await first
    assert code1 == 0 and "status done" in out1, out1
    code, out = await rig.evpay(
        "sessions", "refund", row["id"], "--amount", "1.00", "--reason", "c", "--wait", "2"
    )
    assert code != 0 and "more than" in out, out  # 5.95 - 5.00 left: 0.95
    refunds = [m for m in rig.adyen.state.applied if m["what"] == "refunds"]
    assert [x["amount"]["value"] for x in refunds] == [500]


async def test_a_capture_nobody_asked_for_is_a_reconciliation_finding(
    rigs: Open,  # noqa: F811
) -> None:
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site)
    await site.wait_state("completed")
    stray = {
        "pspReference": "8815000000000999",
        "payment": "8800000000000999",
        "reference": "",
        "amount": {"value": 4200, "currency": EUR},
    }
    await post_webhook(rig, "CAPTURE", stray, success=True)
    _, out = await rig.evpay("reconcile")
    assert "unclaimed_webhook:8815000000000999:CAPTURE" in out, out


async def test_secrets_are_not_shown_by_the_cli(rigs: Open) -> None:  # noqa: F811
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed")
    outputs = [
        await rig.evpay("sessions", "show", row["id"]),
        await rig.evpay("sessions", "list"),
        await rig.evpay("doctor"),
        await rig.evpay("reconcile"),
    ]
    for _, out in outputs:
        for secret in (API_KEY, HMAC_KEY, WEBHOOK_PASSWORD):
            assert secret not in out


async def test_killed_while_awaiting_the_webhook_captures_once(rigs: Open) -> None:  # noqa: F811
    """Received by the acquirer (201 recorded), webhook slow; the daemon dies; the restart
    neither sends the capture again nor books without the webhook."""
    rig = await rigs(frozenset({"slow"}), slow_s=4.0)
    first = await rig.start()
    await rig.plug(first)
    await first.wait_modification("received")
    await first.kill()
    second = await rig.start()
    row = await second.wait_state("completed", timeout=40)
    assert row["data"]["captured_minor"] == 595
    assert len(rig.captures()) == 1
    stored = second.modifications()
    assert [m.status for m in stored] == ["confirmed"]


async def test_uplink_down_longer_than_the_deadline_is_not_a_finding_until_taken(
    rigs: Open,  # noqa: F811
) -> None:
    """A capture never taken (uplink down past webhook_deadline_s) is not 'missing a webhook'
    and is not booked; it is sent once the uplink is back."""
    rig = await rigs(started=False, deadline=1.0)
    site = await rig.start()
    await rig.plug(site)
    await site.wait_modification("queued")
    await asyncio.sleep(2.5)
    assert site.daemon.store.acquirer.overdue(datetime.now(UTC)) == []
    assert site.row()["data"]["captured_minor"] == 0
    await rig.adyen.start("127.0.0.1", rig.acq_port)
    row = await site.wait_state("completed", timeout=40)
    assert row["data"]["captured_minor"] == 595 and len(rig.captures()) == 1


async def test_a_refund_while_the_capture_awaits_its_webhook_is_refused(
    rigs: Open,  # noqa: F811
) -> None:
    rig = await rigs(frozenset({"lost"}), deadline=60.0)
    site = await rig.start()
    await rig.plug(site)
    await site.wait_state("capturing")
    await site.wait_modification("received")
    code, out = await rig.evpay(
        "sessions", "refund", site.row()["id"], "--amount", "1.00", "--reason", "x", "--wait", "2"
    )
    assert code != 0, out
    assert not [m for m in rig.adyen.state.applied if m["what"] == "refunds"]


async def test_a_refund_failed_after_the_refund_is_a_recorded_discrepancy(
    rigs: Open,  # noqa: F811
) -> None:
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site)
    row = await site.wait_state("completed")
    code, out = await rig.evpay(
        "sessions", "refund", row["id"], "--amount", "2.00", "--reason", "goodwill", "--wait", "20"
    )
    assert code == 0 and "status done" in out, out
    (applied,) = [m for m in rig.adyen.state.applied if m["what"] == "refunds"]
    await post_webhook(rig, "REFUND_FAILED", applied, success=True)
    async with asyncio.timeout(10):
        while not site.row()["data"]["discrepancies"]:
            await asyncio.sleep(0.05)
    (said,) = site.row()["data"]["discrepancies"]
    assert ":refund:" in said


async def test_a_refund_queued_across_a_kill_is_one_refund_at_the_acquirer(
    rigs: Open,  # noqa: F811
) -> None:
    """The uplink drops after the capture; the refund waits in the book; the daemon dies; the
    uplink and the daemon come back: one refund at the acquirer, booked on its webhook."""
    rig = await rigs()
    first = await rig.start()
    await rig.plug(first)
    row = await first.wait_state("completed")
    await rig.adyen.stop()
    code, out = await rig.evpay(
        "sessions", "refund", row["id"], "--amount", "2.00", "--reason", "x", "--wait", "1"
    )
    async with asyncio.timeout(20):
        while not any(
            m.modification.kind == "refund" and m.last_error for m in first.modifications()
        ):
            await asyncio.sleep(0.05)
    await first.kill()
    await rig.adyen.start("127.0.0.1", rig.acq_port)
    second = await rig.start()
    async with asyncio.timeout(30):
        while second.row()["data"]["refunds"][0]["status"] != "done":
            await asyncio.sleep(0.05)
    refunds = [m for m in rig.adyen.state.applied if m["what"] == "refunds"]
    assert [x["amount"]["value"] for x in refunds] == [200], (code, out)


async def test_more_than_a_hundred_items_in_one_request_are_refused(tmp_path: Path) -> None:
    async with acq.rig(tmp_path) as r:
        many = [item("REFUND", f"88150000000{n:05d}") for n in range(101)]
        assert (await post(r.webhook_url, payload(*many)))[0] == 400
        assert (await post(r.webhook_url, b'{"notificationItems": []}'))[0] == 400
        assert r.store.acquirer.notifications("adyen") == []


async def test_a_capture_the_acquirer_refuses_is_booked_as_nothing_taken(
    rigs: Open,  # noqa: F811
) -> None:
    """Adyen answers 422 to the capture (the authorisation it knows is smaller): final, no
    webhook will come; the session takes nothing and owes the price, never 'completed'."""
    rig = await rigs()
    site = await rig.start()
    await rig.plug(site, step_wh=500, every_s=0.2)
    await site.wait_state("charging")
    rig.adyen.state.authorised[rig.poi_psp()] = 100  # Adyen's ceiling: 1.00
    row = await site.wait_state("capture_failed", "completed", "capture_unconfirmed", timeout=40)
    async with asyncio.timeout(10):
        while not site.row()["final"]:
            await asyncio.sleep(0.05)
    data = site.row()["data"]
    assert row["state"] == "capture_failed", (row["state"], data["notes"])
    assert data["captured_minor"] == 0 and data["owed_minor"] == 595
    assert not rig.captures()
    (stored,) = site.modifications()
    assert stored.status == "rejected"
