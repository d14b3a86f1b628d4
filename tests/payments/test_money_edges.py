"""Issue 26, the edges of the ledger outside the session's own code: per-terminal validity
tables, tariff restrictions cut at midnight, DST nights, the price shown before charging,
reconciliation of batches against the sessions that belong to them. Each test failed on main."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from drivers.base import BrandTotal, Outcome, TerminalResult
from gateway.cli.reconcile_cmd import load_facts
from gateway.payments.model import update
from gateway.payments.reconcile import BatchFacts, Facts, SessionFacts, reconcile, session_facts
from gateway.payments.record import to_json
from gateway.payments.schemes import Validity
from gateway.payments.session import Hold, HoldStatus, Session, State
from gateway.payments.tariff import (
    Dimension,
    PriceComponent,
    Restrictions,
    Sample,
    Tariff,
    TariffElement,
    price,
)
from gateway.payments.tariff_text import describe
from gateway.runtime.engine_host import EngineHost
from gateway.store import Store
from tests.payments.fixtures import T0, Clock, policy
from tests.payments.test_reconcile import run_session

BERLIN = ZoneInfo("Europe/Berlin")
DAY = datetime(2026, 11, 25, tzinfo=UTC)
MASTERCARD = {"brand": "MasterCard", "aid": "A0000000041010"}
VISA = {"brand": "VISA", "aid": "A0000000031010"}
FLEET = {"brand": "Fleet"}


# ---- item 1: a terminal's (acquirer's) validity table wins for every scheme -----------------


def test_terminal_default_validity_wins_over_the_sites_scheme_table() -> None:
    """``hold_validity_hours = 48`` on a terminal is ``{default: 48h}``: a Mastercard or Visa
    hold on that acquirer lapses after 48 h, not after the site's 30 or 5 days."""
    site = Validity(
        default=timedelta(hours=48),
        schemes={"mastercard": timedelta(days=30), "visa": timedelta(days=5)},
        terminals={"T48": {"default": timedelta(hours=48)}},
    )
    for card in (MASTERCARD, VISA, FLEET):
        assert site.for_card("T48", card)[1] == timedelta(hours=48), card
    # another terminal keeps the site's table
    assert site.for_card("T1", MASTERCARD) == ("mastercard", timedelta(days=30))
    # a terminal's scheme entry still wins over its own default
    mixed = Validity(terminals={"T": {"default": timedelta(hours=48), "visa": timedelta(days=3)}})
    assert mixed.for_card("T", VISA)[1] == timedelta(days=3)
    assert mixed.for_card("T", MASTERCARD)[1] == timedelta(hours=48)


# ---- items 16, 17: restrictions cut at midnight; elapsed hours across DST -------------------


def _energy(price_eur: str, restrictions: Restrictions | None = None) -> TariffElement:
    return TariffElement(
        (PriceComponent(Dimension.ENERGY, Decimal(price_eur)),), restrictions or Restrictions()
    )


def _flat_power(start: datetime, hours: int, kwh_per_h: int) -> list[Sample]:
    return [Sample(start, 0), Sample(start + timedelta(hours=hours), hours * kwh_per_h * 1000)]


def test_weekday_restriction_is_cut_at_midnight() -> None:
    """Friday 23:00 to Saturday 01:00 local, 10 kWh/h: one hour at the weekday rate, one at
    the weekend rate."""
    weekend = frozenset({"SATURDAY", "SUNDAY"})
    tariff = Tariff(
        "W", "EUR", (_energy("1.00", Restrictions(day_of_week=weekend)), _energy("0.50"))
    )
    friday_23 = datetime(2026, 1, 9, 23, 0, tzinfo=BERLIN)  # a Friday
    assert friday_23.weekday() == 4
    got = price(tariff, _flat_power(friday_23, 2, 10), BERLIN)
    assert got.minor == 500 + 1000  # 10 kWh x 0.50 + 10 kWh x 1.00


def test_start_and_end_date_restrictions_are_cut_at_midnight() -> None:
    """A promotion from 10 January (start_date) to 11 January (end_date, exclusive)."""
    promo = Restrictions(start_date=date(2026, 1, 10), end_date=date(2026, 1, 11))
    tariff = Tariff("P", "EUR", (_energy("0.10", promo), _energy("0.50")))
    before = datetime(2026, 1, 9, 23, 0, tzinfo=BERLIN)
    assert price(tariff, _flat_power(before, 2, 10), BERLIN).minor == 500 + 100
    late = datetime(2026, 1, 10, 23, 0, tzinfo=BERLIN)
    assert price(tariff, _flat_power(late, 2, 10), BERLIN).minor == 100 + 500


def test_time_across_the_spring_dst_night_is_billed_by_elapsed_hours() -> None:
    """29 March 2026 in Berlin: 02:00 does not exist. 01:00 to 04:00 local is two hours."""
    tariff = Tariff(
        "T",
        "EUR",
        (
            TariffElement((PriceComponent(Dimension.TIME, Decimal("1.00")),)),
            TariffElement(
                (PriceComponent(Dimension.PARKING_TIME, Decimal("1.00")),),
                Restrictions(start_time=datetime.min.time(), end_time=datetime.min.time()),
            ),
        ),
    )
    start = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    end = datetime(2026, 3, 29, 2, 0, tzinfo=UTC)  # 04:00 CEST
    samples = [Sample(start, 0), Sample(end, 20_000)]
    assert price(tariff, samples, BERLIN).minor == 200
    # The same with the samples in local time (one tzinfo: wall-clock subtraction).
    local = [Sample(start.astimezone(BERLIN), 0), Sample(end.astimezone(BERLIN), 20_000)]
    assert price(tariff, local, BERLIN).minor == 200


def test_parking_across_the_autumn_dst_night_is_billed_by_elapsed_hours() -> None:
    """25 October 2026 in Berlin: 02:00-03:00 happens twice. 00:00 to 04:00 local is 5 h; a
    time-of-day cut at 03:00 must not lose or add an hour."""
    tariff = Tariff(
        "P",
        "EUR",
        (
            TariffElement(
                (PriceComponent(Dimension.PARKING_TIME, Decimal("2.00")),),
                Restrictions(start_time=datetime.min.time().replace(hour=3), end_time=None),
            ),
            TariffElement((PriceComponent(Dimension.PARKING_TIME, Decimal("1.00")),)),
        ),
    )
    start = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # 00:00 CEST
    end = datetime(2026, 10, 25, 3, 0, tzinfo=UTC)  # 04:00 CET
    samples = [Sample(start, 0), Sample(end, 0)]
    # 00:00-03:00 local is 4 elapsed hours at 1.00, 03:00-04:00 one hour at 2.00
    assert price(tariff, samples, BERLIN).minor == 400 + 200
    local = [Sample(s.at.astimezone(BERLIN), s.energy_wh) for s in samples]
    assert price(tariff, local, BERLIN).minor == 600


# ---- item 18: the price shown before charging ------------------------------------------------


def test_shown_price_uses_the_currency_exponent_and_the_tariffs_precision() -> None:
    kwd = Tariff("K", "KWD", (_energy("0.125"),))
    assert describe(kwd) == ["0.125 KWD/kWh"]
    jpy = Tariff("J", "JPY", (_energy("45"),))
    assert describe(jpy) == ["45 JPY/kWh"]
    eur = Tariff("E", "EUR", (_energy("0.3859"),))
    assert describe(eur) == ["0.3859 EUR/kWh"]  # the tariff's own precision, not cut to 0.39
    vat = Tariff(
        "V",
        "EUR",
        (TariffElement((PriceComponent(Dimension.ENERGY, Decimal("0.45"), Decimal(19)),)),),
    )
    assert describe(vat) == ["0.5355 EUR/kWh"]
    plain = Tariff("E2", "EUR", (_energy("0.5"),))
    assert describe(plain) == ["0.50 EUR/kWh"]  # never fewer decimals than the currency has


# ---- items 14, 15: reconciliation ------------------------------------------------------------


def test_a_session_paid_from_two_holds_is_two_terminal_bookings() -> None:
    """The terminal counts one booking per hold captured; the journal must too."""
    two = SessionFacts(
        "s1",
        "t1",
        "completed",
        "EUR",
        "mastercard",
        DAY,
        DAY + timedelta(hours=1),
        DAY + timedelta(hours=1),
        2000,
        2000,
        bookings=2,
    )
    batch = BatchFacts("t1", DAY - timedelta(hours=1), DAY + timedelta(hours=23), "EUR", {})
    facts = Facts(DAY, DAY + timedelta(days=1), DAY + timedelta(days=1), [two], [batch])
    batch = replace(batch, totals={"mastercard": (2, 2000)})
    assert reconcile(replace(facts, batches=[batch])).findings == ()


def test_the_store_row_of_a_two_hold_session_counts_its_captured_holds() -> None:
    session = update(
        Session("s1", "E1", "T1", "EUR", State.COMPLETED, T0),
        holds=(
            Hold("1", 1500, captured_minor=1500, status=HoldStatus.CAPTURED),
            Hold("2", 1500, captured_minor=500, released_minor=1000, status=HoldStatus.CAPTURED),
            Hold("3", 1500, released_minor=1500, status=HoldStatus.RELEASED),
        ),
        captured_at=T0,
    )
    row = {
        "id": "s1",
        "state": "completed",
        "data": to_json(session),
        "created_at": T0,
        "updated_at": T0,
    }
    facts = session_facts(row)
    assert (facts.captured_minor, facts.bookings) == (2000, 2)


def test_the_default_window_loads_the_sessions_of_the_loaded_batches(tmp_path: Path) -> None:
    """``evpay reconcile`` looks at the last 24 h: a batch closed an hour ago covers a period
    that began 40 h ago, and the session captured 30 h ago belongs to it."""
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    clock = Clock(now - timedelta(hours=40))
    store = Store.open(tmp_path / "evpay.sqlite3", clock=clock)
    host = EngineHost(store, policy(), clock)
    empty = TerminalResult("end_of_day", Outcome.APPROVED, totals=())
    host.record_end_of_day("T1", empty, "EUR")
    clock.now = now - timedelta(hours=30)
    run_session(host, clock, "s1", 5000, 4000)
    captured = host.load("s1").captured_minor  # type: ignore[union-attr]
    assert captured > 0
    clock.now = now - timedelta(hours=1)
    batch = TerminalResult(
        "end_of_day", Outcome.APPROVED, totals=(BrandTotal("mastercard", 1, captured, "EUR"),)
    )
    host.record_end_of_day("T1", batch, "EUR")
    report = reconcile(load_facts(store, now - timedelta(hours=24), now, now, upstream=False))
    store.close()
    assert [f.kind for f in report.findings] == []


# ---- ``--resolve`` and the debt, item 2's engine half: regression tests in
# tests/payments/test_money_corrections.py and tests/payments/test_priced_sessions.py
