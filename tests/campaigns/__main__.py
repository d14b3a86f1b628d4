"""``python -m tests.campaigns NAME [--size small|full]``: run one campaign and print its figures."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from bench.measure import machine
from tests.campaigns import fuzz, scan


def _fuzz(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"fuzz, size {args.size}, seed {seed}: {machine()}")
    failed = 0
    total = 0
    for report in fuzz.run(args.size, seed, args.target):
        total += report.inputs
        rate = report.inputs / report.seconds if report.seconds else 0
        print(f"  {report.target:<26} {report.inputs:>10,} inputs  {report.seconds:8.1f} s  {rate:>9,.0f}/s  "
              f"{len(report.findings)} failing")  # fmt: skip
        for found in report.findings[:5]:
            print(f"      {found.kind}: {found.error}  ({found.data[:40]!r})")
        failed += len(report.findings)
    print(f"  {total:,} inputs in all; {failed} failing (kept under {fuzz.CRASHERS})")
    return 1 if failed else 0


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
    f.set_defaults(handler=_fuzz)
    s = sub.add_parser("scan", help="card numbers or secrets in clear in databases, logs, exports")
    s.add_argument("paths", nargs="+")
    s.add_argument("--secret", action="append", help="a secret that must not appear (repeatable)")
    s.set_defaults(handler=_scan)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
