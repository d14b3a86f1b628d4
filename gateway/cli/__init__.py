"""``evpay``: the one command for technicians and developers. Its exit codes are the table
``EXIT_CODES`` (shown by ``evpay --help`` and in the README).

Starting fast: every ``evpay …`` process builds the whole parser, so the ``*_cmd`` modules
import at their top only the standard library and light modules (``gateway.errors``,
``drivers.errors``, ``drivers.money``, ``gateway.cli.stores``). What a command runs (the
settings model, the store, the daemon, aiohttp, the drivers, the simulators) is imported
inside its handler (or the helper that uses it), so only the command that runs pays for it;
annotations name those types under ``TYPE_CHECKING``. A command whose work fills a module
keeps only its parser in ``*_cmd`` and imports that module in the handler (``demo_cmd`` →
``demo_site``). Choices that live in a heavy module are read on first use
(``lazy_choices.choices_from``). tests/test_cli_startup.py holds the line: parsing any command
line imports no aiohttp, daemon, settings, store or pydantic (was ~1.1 s of imports, now ~0.1 s).
"""

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
