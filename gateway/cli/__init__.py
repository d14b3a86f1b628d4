"""``evpay``: the one command for technicians and developers.

Exit codes: 0 ok; 1 findings or a failed operation; 2 usage or invalid input (e.g. a bad
config file for ``config validate``); 3 daemon unreachable; 74 store unusable; 78 the
daemon's configuration is invalid (systemd: RestartPreventExitStatus=78).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import config_cmd, daemon_cmd, demo_cmd, outbox_cmd, sessions_cmd, simulate_cmd, terminal_cmd
from gateway.errors import GatewayError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evpay", description="EVPay Edge payment gateway")
    parser.add_argument("--version", action="version", version=f"evpay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (daemon_cmd, config_cmd, sessions_cmd, outbox_cmd, terminal_cmd, simulate_cmd, demo_cmd):
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
