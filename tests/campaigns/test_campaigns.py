"""The campaigns at small size, inside the default suite (full size: ``python -m tests.campaigns``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.nexo.wire import Encoding
from gateway.runtime.charger import EvsePlan
from gateway.runtime.logs import JsonFormatter
from tests.campaigns import acquirer_crash, crash, fuzz, lost, nexo_lost, powercut, scan, unplug
from tests.campaigns.powercut_vfs import MODELS, power_cut
from tests.site_rig import Site

SEED = int(os.environ.get("CAMPAIGN_SEED", "2026"))
FULL_PAN = (
    "5413330089600010"  # a test card number (Luhn-valid), as a PT that does not mask would send it
)


@pytest.mark.parametrize("target", [t.name for t in fuzz.targets()])
def test_fuzz_small(target: str) -> None:
    report = fuzz.run_target(fuzz.target(target), fuzz.SIZES["small"], SEED, keep=False)
    assert report.findings == [], [(f.kind, f.error, f.data[:60]) for f in report.findings]


def test_kept_inputs_stay_fixed() -> None:
    """Every input a campaign ever failed on (``crashers/``) is answered now."""
    failing = [
        (t, p.name)
        for t, p in fuzz.kept()
        if fuzz.check(fuzz.target(t), p.read_bytes()) is not None
    ]
    assert failing == []


def test_the_fuzzer_finds_a_planted_bug_and_a_hang(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A campaign that could not fail would prove nothing: a parser with a KeyError behind a
    DLE pair and a loop behind an FF FF is caught, kept, and would be replayed."""

    def buggy(data: bytes) -> None:
        if b"\x10\x10" in data:
            raise KeyError("planted")
        if b"\xff\xff" in data:
            while True:
                pass

    monkeypatch.setattr(fuzz, "CRASHERS", tmp_path)
    monkeypatch.setattr(fuzz, "HANG_S", 0.2)
    t = fuzz.Target("planted", buggy, (ValueError,), lambda: [b"\x06\x01\x02"])
    report = fuzz.run_target(t, 3000, SEED)
    kinds = {f.kind for f in report.findings}
    assert kinds == {"crash", "hang"}, report.findings
    assert any("KeyError" in f.error for f in report.findings)
    assert [name for name, _ in fuzz.kept()] and all(name == "planted" for name, _ in fuzz.kept())


def test_scanner_finds_card_numbers_and_secrets_but_not_masked_ones(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (a TEXT, b BLOB)")
    conn.execute(
        "INSERT INTO t VALUES (?, ?)",
        ('{"masked_pan": "541333******0010", "at": "20261126071500123"}', b""),
    )
    conn.execute(
        "INSERT INTO t VALUES (?, ?)",
        (
            f"card {FULL_PAN[:4]} {FULL_PAN[4:8]} {FULL_PAN[8:12]} {FULL_PAN[12:]}",
            b"token-c-secret",
        ),
    )
    conn.commit()
    conn.close()
    (tmp_path / "daemon.log").write_text(
        "ts=1 event=x meter_wh=1234567890123 card=541333******0010\n"
        "at=2026-11-26T13:01:34.123456Z hash=b7b1234560852b\n"
    )  # not the password
    hits = scan.scan_paths([tmp_path], secrets=["token-c-secret", "123456"])
    assert scan.scan_bytes(
        "x", b'{"password": "123456"}', ["123456"]
    )  # standing alone, it is found
    assert [h.where for h in hits] == ["s.sqlite3:t", "s.sqlite3:t"]
    assert any("541333******0010" in h.what for h in hits) and any("secret" in h.what for h in hits)
    assert not any(
        FULL_PAN in str(h) for h in hits
    )  # the scanner does not print what it found either


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log record of the test, as the daemon writes it to journald (JSON, with extras)."""
    lines: list[str] = []
    formatter = JsonFormatter()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_a_terminal_that_sends_the_full_pan_leaves_it_nowhere(
    start_site: Callable[..., Any], log_lines: list[str], tmp_path: Path
) -> None:
    """A PT that does not mask: the full number arrives in BMP 22 and on its printed slip. After
    a whole session (capture, receipt, FAC upstream) the database, the logs, the outbox, the
    CPO's records and a journal export hold no full card number and no token."""
    s: Site = await start_site("DE")
    s.sim.config.pan = FULL_PAN
    s.charger.plug_in("E1", EvsePlan(energy_wh=6_000, step_wh=2_000))
    await s.until(lambda: s.session()["final"] and s.cpo.state.facs)
    assert s.session()["state"] == "completed"
    card = s.session()["data"]["card"]
    assert card.get("masked_pan") == FULL_PAN[:6] + "******" + FULL_PAN[-4:]
    store = s.daemon.store
    out = (
        tmp_path / "out"
    )  # what the gateway wrote and sent (the test's own config holds the secrets)
    out.mkdir()
    (out / "export.json").write_text(json.dumps(store.journal_export(session=s.session()["id"])))
    (out / "daemon.log").write_text("\n".join(log_lines))
    (out / "cpo.json").write_text(
        json.dumps({"facs": s.cpo.state.facs, "receipts": s.cpo.state.receipts}, default=str)
    )
    secrets = [*s.cpo.state.tokens, "123456"]  # OCPI tokens, the terminal password
    hits = scan.scan_paths([store.path, out], secrets=secrets)
    assert hits == [], [str(h) for h in hits]
    assert len(log_lines) > 20  # the logs were really captured


def test_crash_small(tmp_path: Path) -> None:
    """The real daemon killed six times while two EVs charge and pay: the books agree."""
    figures = crash.run("small", SEED, tmp_path / "run")
    assert figures.violations == [], figures.violations
    assert figures.kills == 6 and figures.sessions >= 2 and figures.completed >= 1, (
        crash.main_figures(figures)
    )


def test_acquirer_crash_small(tmp_path: Path) -> None:
    """The daemon killed once at each dangerous point around an acquirer modification and its
    webhook: one modification per key, the store's amounts are the acquirer's, no FAC against it.
    In the default suite: 11-17 s on the shared 2-core machine (waits are polls, not sleeps)."""
    figures = acquirer_crash.run("small", SEED, tmp_path / "run")
    assert figures.violations == [], acquirer_crash.describe(figures)
    assert figures.kills == 5 and figures.completed >= 1, acquirer_crash.describe(figures)
    aimed = {p: figures.points[p] for p in acquirer_crash.POINTS}
    assert all(aimed.values()), acquirer_crash.describe(figures)  # each point hit at least once
    assert figures.by_kind["captures"] >= 1, acquirer_crash.describe(figures)


_WRITER = """
import sqlite3, sys
from pathlib import Path
from tests.campaigns.powercut_vfs import PowerCutVfs
vfs = PowerCutVfs(Path(sys.argv[2]))
vfs.install(default=False)
conn = sqlite3.connect(f"file:{sys.argv[1]}?vfs=powercut", uri=True, isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute(f"PRAGMA synchronous = {sys.argv[3]}")
conn.execute("CREATE TABLE step (n INTEGER PRIMARY KEY, body TEXT)")
for n in range(1, 61):
    conn.execute("INSERT INTO step VALUES (?, ?)", (n, "x" * 900))  # committed: acknowledged
print(n, flush=True)
import os; os._exit(0)  # the power goes: no close, no checkpoint
"""


@pytest.mark.parametrize("synchronous", ["FULL", "OFF"])
def test_the_power_cut_emulator_keeps_synced_steps_and_loses_the_rest(
    tmp_path: Path, synchronous: str
) -> None:
    """The emulator must be able to fail: with fsync at every commit (the store's FULL) every
    acknowledged step survives every cut model; without it (OFF) the cuts lose steps."""
    db, logs = tmp_path / "w.sqlite3", tmp_path / "logs"
    logs.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", _WRITER, str(db), str(logs), synchronous],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert run.stdout.strip() == "60"
    kept: dict[str, int] = {}
    for i, model in enumerate(MODELS * 3):
        image = tmp_path / f"image{i}"
        image.mkdir()
        for f in [*tmp_path.glob("w.sqlite3*"), *logs.iterdir()]:
            shutil.copy2(f, image / f.name)
        cut = power_cut(image / "w.sqlite3", image, random.Random(i), model)
        conn = sqlite3.connect(image / "w.sqlite3")
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        try:
            kept[f"{model}{i}"] = conn.execute("SELECT count(*) FROM step").fetchone()[0]
        except sqlite3.OperationalError:  # even the table's creation was not on disk
            kept[f"{model}{i}"] = 0
        conn.close()
        if synchronous == "FULL":
            assert cut.unsynced == 0
    if synchronous == "FULL":
        assert set(kept.values()) == {60}, kept
    else:
        assert kept["none0"] < 60 and min(kept.values()) < max(kept.values()), kept


# 45 s: the default suite stays near 15 min; `--run-slow` and `python -m tests.campaigns powercut` run it
@pytest.mark.slow
def test_power_cuts_small(tmp_path: Path) -> None:
    """The real daemon's power cut four times (half of them mid-commit) while EVs charge and pay:
    every image passes the integrity check and holds what was acknowledged; the books agree."""
    figures, campaign = powercut.run("small", SEED, tmp_path / "run")
    assert figures.violations == [], figures.violations
    assert figures.kills == powercut.SIZES["small"][0] and figures.sessions >= 1, powercut.describe(
        figures, campaign
    )


# (command, cut before the terminal's message n) -> what the terminal's books hold afterwards and
# whether the driver had the result (stored through its persist hook) before the line went.
CUTS = {
    ("preauth", 0): ("reversed", False),
    ("preauth", 2): ("reversed", False),
    ("preauth", 3): ("open", True),
    ("capture", 0): ("open", False),
    ("capture", 1): ("open", False),
    ("capture", 2): ("booked", True),
    ("release", 1): ("open", False),
    ("release", 2): ("reversed", True),
}


@pytest.mark.parametrize(("operation", "before"), list(CUTS))
async def test_a_cut_line_leaves_the_terminal_as_zvt_says(operation: str, before: int) -> None:
    """The simulator's unplug, against the real driver over TCP: a result the terminal could not
    deliver is reversed by the terminal itself (ZVT 2.2.8: no acknowledgement, no transaction);
    one delivered stays, and the driver stored it before acknowledging, though it reports the
    lost line."""
    from drivers.base import Outcome
    from drivers.money import Money
    from drivers.sim.ports import serve_tcp
    from drivers.sim.terminal import SimConfig, SimTerminal
    from drivers.transport import open_transport
    from drivers.zvt.asyncio.terminal import ZvtOptions, ZvtTerminal
    from drivers.zvt.constants import Command

    sim = SimTerminal(SimConfig(password="123456", card_wait_s=0.01, result_ack_timeout_s=0.5))
    server = await serve_tcp("127.0.0.1", 0, lambda p: sim.serve(p, serial=False))
    transport, framing = open_transport(f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    terminal = ZvtTerminal(
        "t1", transport, serial_framing=framing, options=ZvtOptions(password="123456")
    )
    stored: list[Any] = []

    async def persist(result: Any) -> None:
        stored.append(result)

    try:
        assert (await terminal.connect()).approved
        hold = await terminal.preauthorize(Money(5000, "EUR"), "first", persist)
        stored.clear()
        euros = Money(5000, "EUR")
        command = {
            "preauth": Command.PRE_AUTHORISATION,
            "capture": Command.PARTIAL_REVERSAL,
            "release": Command.PRE_AUTH_REVERSAL,
        }[operation]
        sim.config.unplug_at = (command, before)
        if operation == "preauth":
            result = await terminal.preauthorize(euros, "second", persist)
            receipt = 2
        elif operation == "capture":
            result = await terminal.capture(
                hold.ref or "", euros, Money(833, "EUR"), "first", persist
            )
            receipt = 1
        else:
            result = await terminal.release(hold.ref or "", euros, persist)
            receipt = 1
        await asyncio.sleep(0.8)  # past the terminal's wait for our acknowledgement
        state, delivered = CUTS[(operation, before)]
        assert result.outcome is Outcome.UNKNOWN and not unplug.cut_pending(sim.config)
        assert sim.state.transactions[receipt].state == state
        assert bool(stored) == delivered and all(r.approved for r in stored)
    finally:
        server.close()


def test_unplugs_small(tmp_path: Path) -> None:
    """Terminal lines cut mid-exchange (TCP reset; serial cable or USB adapter pulled) while EVs
    charge and pay: at least one cut lands, and the store, the terminals and the CPO agree."""
    figures, campaign = unplug.run("small", SEED, tmp_path / "run")
    assert figures.violations == [], figures.violations
    assert sum(campaign.cuts.values()) >= 1 and figures.completed >= 1, unplug.describe(
        figures, campaign
    )


@pytest.mark.parametrize("encoding", ["xml", "adyen-json"])
def test_lost_results_on_nexo_small(encoding: Encoding) -> None:
    """The nexo driver on the wire: answers lost before and after the POI acted (and
    TransactionStatus answering InProgress, restarts between questions), every one resolved
    by asking, nothing sent twice, the POI's ledger equal to the journal."""
    f = nexo_lost.run("small", SEED, encoding)
    assert f.violations == [], f.violations[:5]
    assert {p for _, p in f.losses} == {"before", "after"} and f.restarts, nexo_lost.describe(f)
    assert f.status_questions >= sum(f.losses.values()) and f.completed, nexo_lost.describe(f)


def test_lost_results_small() -> None:
    """At least 100 answers lost of each kind, before and after the terminal acted: every one
    resolved by asking the terminal, nothing booked twice or without evidence."""
    figures = lost.run("small", SEED)
    for kind in lost.KINDS.values():
        assert sum(n for (k, _), n in figures.losses.items() if k == kind) >= 100, lost.describe(
            figures
        )
        assert figures.losses[(kind, "before")] and figures.losses[(kind, "after")], lost.describe(
            figures
        )
    assert figures.completed > 0


# 50 s: the default suite stays near 15 min; `--run-slow` and `python -m tests.campaigns partition` run it
@pytest.mark.slow
def test_partitions_small(tmp_path: Path) -> None:
    """The CPO unreachable, then the MQTT broker gone, while EVs charge and pay: the backlog
    drains, the charger's messages held at the broker arrive, nothing is lost or sent twice,
    and the books agree."""
    figures = crash.run_partitions("small", SEED, tmp_path / "run", broker=True)
    assert figures.violations == [], figures.violations
    assert len(figures.partitions) == crash.PARTITIONS["small"], crash.main_figures(figures)
    assert figures.completed >= 1, crash.main_figures(figures)
