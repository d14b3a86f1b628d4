"""The acceptance scenarios, in order, against one terminal; a JSON and a human report.

Each scenario says what it checks and passes or fails on what the terminal answered. Where a
card must be presented (or must not be), a technician is asked; with ``--device sim`` the
protocol's simulator plays the card, and nobody is asked. The terminal is built through the
driver registry (``hil/devices.py``), for any protocol it has (``--protocol zvt|nexo``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from drivers.base import Outcome, PaymentTerminal
from drivers.money import Money
from drivers.sim.terminal import SimConfig
from drivers.zvt.charset import CHARSETS, DEFAULT_CHARSET
from gateway.runtime import terminal_registry
from hil.devices import SimCard, Wanted, open_device
from hil.profiles import PROFILES, Profile
from hil.trace import TraceRecorder


class ScenarioFailed(Exception):
    """What the terminal answered is not what the scenario expects."""


def need(ok: bool, text: str) -> None:
    if not ok:
        raise ScenarioFailed(text)


SCENARIOS = (
    "registration",
    "preauth_capture",
    "partial_reversal",
    "full_release",
    "decline",
    "abort",
    "open_preauths",
    "last_result",
    "end_of_day",
)


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    passed: bool
    detail: str
    seconds: float


class Bench:
    """The terminal under test, and how to reach the person at it (or the simulator)."""

    def __init__(
        self,
        terminal: PaymentTerminal,
        profile: Profile,
        sim: SimCard | None,
        ask: Callable[[str], None],
    ) -> None:
        self.t, self.profile, self.sim, self.ask = terminal, profile, sim, ask
        self.money = Money(profile.amount_minor, "EUR")
        self.last_receipt: str | None = None

    def card(self, what: str, outcome: Literal["approve", "decline"] = "approve") -> None:
        if self.sim is not None:
            self.sim.present(outcome)
        else:
            self.ask(what)

    def capture_mode(self, mode: Literal["partial_reversal", "book_total"]) -> str:
        """Switch a terminal whose driver has capture modes (ZVT 06 23 / 06 24); another
        (nexo Completion) captures one way, named in the report."""
        options = getattr(self.t, "options", None)
        if options is None or not hasattr(options, "capture_mode"):
            return "its one capture"
        setattr(self.t, "options", replace(options, capture_mode=mode))  # noqa: B010
        return mode

    async def registration(self) -> str:
        r = await self.t.connect()
        need(r.approved, f"registration: {r.message}")
        return f"registered, terminal id {r.terminal_id}"

    async def _preauth(self, reference: str) -> str:
        self.card(f"present the test card for a pre-authorisation of {self.money}")
        r = await self.t.preauthorize(self.money, reference)
        if not r.approved or r.ref is None:
            raise ScenarioFailed(f"pre-authorisation: {r.outcome} {r.message}")
        return r.ref

    async def _capture(self, mode: Literal["partial_reversal", "book_total"]) -> str:
        receipt = await self._preauth(f"HIL-{mode}"[:16])
        how = self.capture_mode(mode)
        amount = Money(self.profile.capture_minor, "EUR")
        r = await self.t.capture(receipt, self.money, amount, f"HIL-{mode}"[:16])
        need(r.approved, f"capture ({mode}): {r.outcome} {r.message}")
        self.last_receipt = r.ref
        return (
            f"held {self.money} (receipt {receipt}), captured {amount} by {how}; the terminal "
            f"echoed {r.amount}"
        )

    async def preauth_capture(self) -> str:
        return await self._capture("book_total")

    async def partial_reversal(self) -> str:
        return await self._capture("partial_reversal")

    async def full_release(self) -> str:
        receipt = await self._preauth("HIL-RELEASE")
        r = await self.t.release(receipt, self.money)
        need(r.approved, f"release: {r.outcome} {r.message}")
        self.last_receipt = r.ref
        return f"held {self.money} (receipt {receipt}) and released it all"

    async def decline(self) -> str:
        self.card(
            "present a card that will be DECLINED (e.g. the test card with a blocked PIN)",
            "decline",
        )
        r = await self.t.preauthorize(self.money, "HIL-DECLINE")
        need(r.outcome is Outcome.DECLINED, f"expected a decline, got {r.outcome} {r.message}")
        return f"declined: {r.message} (code {r.result_code})"

    async def abort(self) -> str:
        if self.sim is not None:
            self.sim.withhold()  # the card never comes: the sale system aborts
        else:
            self.ask("do NOT present a card: the runner aborts the pre-authorisation after 3 s")
        pending = asyncio.create_task(self.t.preauthorize(self.money, "HIL-ABORT"))
        await asyncio.sleep(3.0 if self.sim is None else 0.5)
        sent = await self.t.abort()
        r = await pending
        if self.sim is not None:
            self.sim.restore()
        need(
            r.outcome is Outcome.ABORTED,
            f"expected an abort, got {r.outcome} {r.message} (abort: {sent.message})",
        )
        return f"aborted while waiting for the card ({sent.message})"

    async def open_preauths(self) -> str:
        receipt = await self._preauth("HIL-OPEN")
        r = await self.t.open_preauthorizations()
        need(
            r.approved and receipt in r.open_refs,
            f"enquiry: {r.message}, open {r.open_refs}",
        )
        released = await self.t.release(receipt, self.money)
        need(released.approved, f"release after the enquiry: {released.message}")
        self.last_receipt = released.ref
        return (
            f"receipt {receipt} listed among the open pre-authorisations "
            f"{list(r.open_refs)}, then released"
        )

    async def last_result(self) -> str:
        r = await self.t.last_result()
        need(r.approved, f"repeat of the last result: {r.message}")
        need(
            self.last_receipt is None or r.ref == self.last_receipt,
            f"the repeat names receipt {r.ref}, the last transaction was {self.last_receipt}",
        )
        return f"the terminal repeated its last result (receipt {r.ref})"

    async def end_of_day(self) -> str:
        r = await self.t.end_of_day()
        need(r.approved, f"end of day: {r.outcome} {r.message}")
        groups = (
            ", ".join(f"{t.brand} {t.count} for {t.amount_minor} {t.currency}" for t in r.totals)
            or "no card groups"
        )
        return f"batch closed: total {r.amount}, receipts {r.batch_range}, {groups}"


async def run(
    device: str,
    profile: Profile,
    ask: Callable[[str], None],
    sim_config: SimConfig | None = None,
    *,
    trace: Path | None = None,
    model: str | None = None,
    charset: str = DEFAULT_CHARSET,
    protocol: str = "zvt",
    poi_id: str = "POI-SIM-1",
) -> dict[str, Any]:
    """``sim_config``: how the ZVT simulator behaves with ``device="sim"`` (tests inject
    faults). ``trace``: write every APDU of the run there, in the real-trace format
    (hil/trace.py; ZVT only); ``model``: the terminal's model and firmware, as the trace records
    it; ``charset``: the terminal's text character set (as ``terminals.<id>.charset``);
    ``protocol``: the terminal's (``terminal_registry.protocols()``); ``poi_id``: a nexo POI's."""
    wanted = Wanted(
        protocol=protocol,
        password=os.environ.get("EVPAY_ZVT_PASSWORD", "000000"),
        capture_mode=profile.capture_mode,
        charset=charset,
        poi_id=poi_id,
    )
    bench_device = await open_device(device, wanted, sim_config)
    terminal, sim = bench_device.terminal, bench_device.card
    bench = Bench(terminal, profile, sim, ask)
    recorder = TraceRecorder(model or ("simulator" if sim else device), profile.name, charset)
    client = getattr(terminal, "client", None)
    if hasattr(client, "tap"):  # a driver that shows its bytes (ZVT's APDUs)
        setattr(client, "tap", recorder.tap)  # noqa: B010
    results = []
    started = datetime.now(UTC)
    try:
        for name in SCENARIOS:
            step: Callable[[], Awaitable[str]] = getattr(bench, name)
            recorder.scenario = name
            began = time.monotonic()
            try:
                async with asyncio.timeout(240):
                    detail = await step()
                passed = True
            except (ScenarioFailed, TimeoutError) as exc:
                passed, detail = False, str(exc) or "no answer within 240 s"
            except Exception as exc:  # noqa: BLE001 - the report names what went wrong, the run goes on
                passed, detail = False, f"{type(exc).__name__}: {exc}"
            results.append(Result(name, passed, detail, round(time.monotonic() - began, 2)))
    finally:
        await bench_device.close()
        if trace is not None:
            recorder.write(trace)
    return {
        "device": device if sim is None else "sim",
        "profile": profile.name,
        "quirks": list(profile.quirks),
        "started": started.isoformat(),
        "passed": all(r.passed for r in results),
        "scenarios": [asdict(r) for r in results],
    }


def human(report: dict[str, Any]) -> str:
    lines = [f"HIL run on {report['device']} (profile {report['profile']}), {report['started']}"]
    lines += [
        f"  {'PASS' if s['passed'] else 'FAIL'} {s['name']:<17} {s['seconds']:>6.2f} s  "
        f"{s['detail']}"
        for s in report["scenarios"]
    ]
    lines += [f"  quirk: {q}" for q in report["quirks"]]
    lines.append("ALL PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the acceptance scenarios against one terminal")
    run_p.add_argument(
        "--device",
        required=True,
        help="a device URL (serial://, tcp://, usb://; http(s):// for nexo) or sim",
    )
    run_p.add_argument("--protocol", choices=terminal_registry.protocols(), default="zvt")
    run_p.add_argument("--poi-id", default="POI-SIM-1", help="nexo: the POI's POIID")
    run_p.add_argument("--profile", choices=sorted(PROFILES), default="zvt-serial")
    run_p.add_argument(
        "--report", type=Path, help="write the JSON report here (and FILE.txt for people)"
    )
    run_p.add_argument("--yes", action="store_true", help="do not wait for Enter at the prompts")
    run_p.add_argument(
        "--trace", type=Path, help="write every APDU here, in the zvt-real-traces format"
    )
    run_p.add_argument(
        "--model", help='the terminal, as the trace names it ("Feig cVEND plug, fw …")'
    )
    run_p.add_argument(
        "--charset", choices=CHARSETS, default=DEFAULT_CHARSET, help="the terminal's text set"
    )
    args = parser.parse_args(argv)
    if args.trace is not None and args.protocol != "zvt":
        parser.error("--trace records ZVT APDUs; a nexo run has no byte trace")

    def ask(what: str) -> None:
        print(f">>> {what}", flush=True)
        if not args.yes:
            input("    press Enter when ready ")

    report = asyncio.run(
        run(
            args.device,
            PROFILES[args.profile],
            ask,
            trace=args.trace,
            model=args.model,
            charset=args.charset,
            protocol=args.protocol,
            poi_id=args.poi_id,
        )
    )
    text = human(report)
    print(text)
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        args.report.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    return 0 if report["passed"] else 1
