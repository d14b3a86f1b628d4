"""``evpay``: the one command for technicians and developers. Its exit codes are the table
``EXIT_CODES`` (shown by ``evpay --help`` and in the README)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import (
    config_cmd,
    daemon_cmd,
    demo_cmd,
    doctor_cmd,
    install_cmd,
    journal_cmd,
    meter_cmd,
    outbox_cmd,
    reconcile_cmd,
    sessions_cmd,
    simulate_cmd,
    store_cmd,
    terminal_cmd,
)
from gateway.errors import GatewayError

EXIT_CODES = (
    (0, "ok (the terminal approved; the daemon is healthy)"),
    (
        1,
        "the operation failed or was refused (a declined card, a terminal error); status: degraded",
    ),
    (
        2,
        "bad input: usage, an invalid config file or secret (config validate), a bad amount or "
        "password",
    ),
    (3, "status: the daemon is not reachable"),
    (
        69,
        "unavailable: the terminal device cannot be reached, a port is taken, another daemon "
        "holds the database",
    ),
    (70, "an internal invariant was violated (a bug: report it)"),
    (74, "the database cannot be used (disk full, read-only, damaged, deleted under the daemon)"),
    (78, "run: the configuration or a secret it names is invalid (systemd does not restart on 78)"),
    (130, "interrupted (Ctrl-C)"),
)


def build_parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES)
    parser = argparse.ArgumentParser(
        prog="evpay",
        description="EVPay Edge payment gateway",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"evpay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        daemon_cmd,
        config_cmd,
        doctor_cmd,
        install_cmd,
        sessions_cmd,
        outbox_cmd,
        terminal_cmd,
        meter_cmd,
        journal_cmd,
        store_cmd,
        reconcile_cmd,
        simulate_cmd,
        demo_cmd,
    ):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except GatewayError as exc:
        print(f"evpay: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code
