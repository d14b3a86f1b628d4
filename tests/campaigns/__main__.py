"""``python -m tests.campaigns NAME [--size small|full]``: run one campaign and print its figures."""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.measure import machine
from tests.campaigns import (
    acquirer_crash,
    crash,
    fuzz,
    lost,
    nexo_lost,
    nexo_site,
    powercut,
    scan,
    unplug,
)


def _atheris(args: argparse.Namespace, seed: int) -> int:
    """Each target in a process of its own (libFuzzer exits when done); its figures read back."""
    print(f"fuzz (atheris), size {args.size}, seed {seed}: {machine()}")
    failed = 0
    for t in fuzz.targets():
        if args.target and t.name != args.target:
            continue
        started = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.campaigns.atheris_run",
                "--target",
                t.name,
                "--runs",
                str(fuzz.SIZES[args.size]),
                "--seed",
                str(seed),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        done = re.search(r"Done (\d+) runs", run.stderr)
        runs = int(done.group(1)) if done else 0
        verdict = "ok" if run.returncode == 0 else f"FAILED (exit {run.returncode})"
        print(f"  {t.name:<26} {runs:>10,} inputs  {seconds:8.1f} s  {verdict}")
        if run.returncode != 0:
            failed += 1
            print("    " + "\n    ".join(run.stderr.strip().splitlines()[-8:]))
    print(f"  {failed} target(s) failing (inputs kept under {fuzz.CRASHERS})")
    return 1 if failed else 0


def _fuzz(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    if args.engine == "atheris":
        return _atheris(args, seed)
    print(f"fuzz, size {args.size}, seed {seed}: {machine()}")
    failed = 0
    total = 0
    for report in fuzz.run(args.size, seed, args.target):
        total += report.inputs
        rate = report.inputs / report.seconds if report.seconds else 0
        print(
            f"  {report.target:<26} {report.inputs:>10,} inputs  {report.seconds:8.1f} s  {rate:>9,.0f}/s  "
            f"{len(report.findings)} failing"
        )
        for found in report.findings[:5]:
            print(f"      {found.kind}: {found.error}  ({found.data[:40]!r})")
        failed += len(report.findings)
    print(f"  {total:,} inputs in all; {failed} failing (kept under {fuzz.CRASHERS})")
    return 1 if failed else 0


Outcome = tuple[str, list[str], list[str]]  # the figures, lines of detail, violations


def _report(args: argparse.Namespace, run: Callable[[int], Outcome]) -> int:
    """The header, the campaign, its figures; exit 1 on any violation."""
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    size = f"the full size's site with {args.kills} kills" if getattr(args, "kills", None) else None
    where = f" on nexo ({args.encoding})" if getattr(args, "protocol", "zvt") == "nexo" else ""
    print(f"{args.campaign}{where}, {size or 'size ' + args.size}, seed {seed}: {machine()}")
    figures, details, violations = run(seed)
    print(f"  {figures}")
    for line in details:
        print(f"    {line}")
    for violation in violations:
        print(f"  VIOLATION: {violation}")
    return 1 if violations else 0


def _crash(args: argparse.Namespace) -> int:
    def run(seed: int) -> Outcome:
        if args.campaign == "crash" and args.protocol == "nexo":
            f = nexo_site.run(args.size, seed, args.keep, args.encoding, args.kills)
        elif args.campaign == "crash":
            f = crash.run(args.size, seed, args.keep, args.kills)
        else:
            f = crash.run_partitions(args.size, seed, args.keep, broker=not args.uplink_only)
        return crash.main_figures(f), f.partitions, f.violations

    return _report(args, run)


def _acquirer_crash(args: argparse.Namespace) -> int:
    def run(seed: int) -> Outcome:
        f = acquirer_crash.run(args.size, seed, args.keep)
        return acquirer_crash.describe(f), f.findings, f.violations

    return _report(args, run)


def _powercut(args: argparse.Namespace) -> int:
    def run(seed: int) -> Outcome:
        f, campaign = powercut.run(args.size, seed, args.keep)
        return powercut.describe(f, campaign), [], f.violations

    return _report(args, run)


def _unplug(args: argparse.Namespace) -> int:
    def run(seed: int) -> Outcome:
        campaign: unplug.Unplugs | nexo_site.NexoUnplugs
        if args.protocol == "nexo":
            armed = unplug.SIZES[args.size]
            f, campaign = nexo_site.run_unplugs(armed, seed, args.keep, args.encoding)
        else:
            f, campaign = unplug.run(args.size, seed, args.keep)
        cuts = [
            f"{t} {command}, cut {step}: {n}"
            for (t, command, step), n in sorted(campaign.cuts.items())
        ]
        return unplug.describe(f, campaign), cuts, f.violations

    return _report(args, run)


def _lost(args: argparse.Namespace) -> int:
    def run(seed: int) -> Outcome:
        if args.protocol == "nexo":
            found = nexo_lost.run(args.size, seed, args.encoding)
            return nexo_lost.describe(found), [], found.violations
        try:
            figures = lost.run(args.size, seed)
        except AssertionError as exc:  # the simulation names the session and the broken invariant
            return "stopped at the first violation", [], [str(exc)]
        return lost.describe(figures), [], []

    return _report(args, run)


def _scan(args: argparse.Namespace) -> int:
    found = scan.scan_paths([Path(p) for p in args.paths], secrets=args.secret or ())
    for hit in found:
        print(f"  {hit}")
    print(f"scan: {len(found)} finding(s) in {len(args.paths)} path(s)")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.campaigns")
    sub = parser.add_subparsers(dest="campaign", required=True)
    f = sub.add_parser("fuzz", help="mutated inputs into every parser of outside bytes")
    f.add_argument("--size", choices=tuple(fuzz.SIZES), default="small")
    f.add_argument("--seed", type=int)
    f.add_argument("--target", choices=[t.name for t in fuzz.targets()])
    f.add_argument(
        "--engine",
        choices=("mutate", "atheris"),
        default="mutate",
        help="atheris: coverage-guided (pip install -e '.[fuzz]')",
    )
    f.set_defaults(handler=_fuzz)
    site_campaigns = (  # name, help, sizes, handler: the real daemon with the site around it
        ("crash", "the real daemon SIGKILLed while EVs charge and pay", crash.SIZES, _crash),
        (
            "acquirer-crash",
            "the daemon SIGKILLed around each acquirer modification and webhook",
            acquirer_crash.SIZES,
            _acquirer_crash,
        ),
        (
            "powercut",
            "the daemon's power cut: its unsynced writes lost or torn",
            powercut.SIZES,
            _powercut,
        ),
        (
            "unplug",
            "the terminal's line cut (TCP reset, serial cable, USB) mid-exchange",
            unplug.SIZES,
            _unplug,
        ),
        (
            "partition",
            "the CPO unreachable or the MQTT broker gone while EVs charge and pay",
            crash.PARTITIONS,
            _crash,
        ),
    )
    for name, text, sizes, handler in site_campaigns:
        c = sub.add_parser(name, help=text)
        c.add_argument("--size", choices=tuple(sizes), default="small")
        c.add_argument("--seed", type=int)
        c.add_argument(
            "--keep", type=Path, help="keep the run's files (database, logs, terminal books) here"
        )
        c.set_defaults(handler=handler)
        if name in ("crash", "unplug"):
            c.add_argument("--protocol", choices=("zvt", "nexo"), default="zvt")
            c.add_argument(
                "--encoding", choices=("xml", "adyen-json"), default="xml", help="nexo only"
            )
        if name == "crash":
            c.add_argument(
                "--kills",
                type=int,
                help="the full size's site with this many kills (no minimum of sessions)",
            )
        if name == "partition":
            c.add_argument(
                "--uplink-only", action="store_true", help="cut only the CPO, never the MQTT broker"
            )
    lr = sub.add_parser(
        "lost-results", help="the terminal's answers lost before and after it acted"
    )
    lr.add_argument("--size", choices=tuple(lost.SIZES), default="small")
    lr.add_argument("--seed", type=int)
    lr.add_argument(
        "--protocol", choices=("zvt", "nexo"), default="zvt", help="nexo: the driver on the wire"
    )
    lr.add_argument("--encoding", choices=("xml", "adyen-json"), default="xml", help="nexo only")
    lr.set_defaults(handler=_lost)
    s = sub.add_parser("scan", help="card numbers or secrets in clear in databases, logs, exports")
    s.add_argument("paths", nargs="+")
    s.add_argument("--secret", action="append", help="a secret that must not appear (repeatable)")
    s.set_defaults(handler=_scan)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
