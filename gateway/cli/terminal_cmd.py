"""``evpay terminal ACTION --device URL``: bench checks of a terminal in the field.

Amounts are decimal strings (``--amount 12.34 --currency EUR``), converted exactly. The ZVT
password is never an argument (``ps`` would show it): it comes from ``--password-file`` or
the environment variable named by ``--password-env`` (default EVPAY_ZVT_PASSWORD), else the
factory default 000000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from drivers.base import TerminalResult
from drivers.errors import DriverError
from drivers.money import Money
from drivers.transport import open_transport
from drivers.zvt.terminal import ZvtOptions, ZvtTerminal

ACTIONS = ("status", "register", "preauth", "capture", "partial-reverse", "release", "reverse", "abort",
           "end-of-day", "diagnose", "open-preauths", "read-card", "last-result")  # fmt: skip
_EXIT_FAILED = 1
_EXIT_USAGE = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    term = commands.add_parser("terminal", help="talk to a payment terminal directly (bench checks)")
    term.add_argument("action", choices=ACTIONS)
    term.add_argument("--device", required=True, help="serial:///dev/ttyUSB0, tcp://host:port or usb://VID:PID")
    term.add_argument("--amount", help="decimal amount, e.g. 12.34 (preauth, capture, partial-reverse)")
    term.add_argument("--held", help="the pre-authorised amount (partial-reverse, release)")
    term.add_argument("--currency", default="EUR")
    term.add_argument("--receipt", type=int, help="the terminal's receipt number of the transaction")
    term.add_argument("--reference", default="BENCH", help="reference sent with pre-auth and capture")
    term.add_argument("--timeout", type=int, default=30, help="card wait for read-card, seconds")
    term.add_argument("--password-file", type=Path)
    term.add_argument("--password-env", default="EVPAY_ZVT_PASSWORD")
    term.add_argument("--json", action="store_true")
    term.set_defaults(handler=_terminal)


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        return str(args.password_file.read_text(encoding="utf-8").strip())
    return os.environ.get(args.password_env, "000000")


def _money(args: argparse.Namespace, name: str) -> Money:
    text = getattr(args, name)
    if text is None:
        raise DriverError(f"{args.action} needs --{name}")
    return Money.parse(text, args.currency)


def _receipt(args: argparse.Namespace) -> int:
    if args.receipt is None:
        raise DriverError(f"{args.action} needs --receipt (the terminal's receipt number)")
    return int(args.receipt)


def _terminal(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_run(args))
    except DriverError as exc:
        print(f"evpay terminal: {exc}")
        return _EXIT_USAGE
    _print(result, args.json)
    return 0 if result.approved else _EXIT_FAILED


async def _run(args: argparse.Namespace) -> TerminalResult:
    transport, serial_framing = open_transport(args.device)
    options = ZvtOptions(
        password=_password(args),
        currency=args.currency,
        capture_mode="book_total" if args.action == "capture" else "partial_reversal",
    )
    terminal = ZvtTerminal("cli", transport, serial_framing=serial_framing, options=options)
    try:
        registration = await terminal.connect()
        if args.action == "register" or not registration.approved:
            return registration
        return await _action(terminal, args)
    finally:
        await terminal.close()


async def _action(t: ZvtTerminal, args: argparse.Namespace) -> TerminalResult:
    action = args.action
    if action == "status":
        return await t.status()
    if action == "preauth":
        return await t.preauthorize(_money(args, "amount"), args.reference)
    if action == "capture":  # book total of the used amount
        amount = _money(args, "amount")
        return await t.capture(_receipt(args), amount, amount, args.reference)
    if action == "partial-reverse":  # book --amount of --held, release the rest
        return await t.capture(_receipt(args), _money(args, "held"), _money(args, "amount"), args.reference)
    if action == "release":
        return await t.release(_receipt(args), _money(args, "held"))
    if action == "reverse":
        return await t.reverse(_receipt(args))
    if action == "abort":
        return await t.abort()
    if action == "end-of-day":
        return await t.end_of_day()
    if action == "diagnose":
        return await t.diagnose()
    if action == "open-preauths":
        return await t.open_preauthorizations()
    if action == "read-card":
        return await t.read_card(args.timeout)
    return await t.last_result()


def _print(result: TerminalResult, as_json: bool) -> None:
    data: dict[str, Any] = asdict(result)
    data["amount"] = str(result.amount) if result.amount else None
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print(f"{result.operation}: {result.outcome.value.upper()} - {result.message}")
    for key in ("result_code", "amount", "receipt_no", "trace_no", "terminal_id"):
        if data[key] is not None:
            value = f"{data[key]:02X}" if key == "result_code" else data[key]
            print(f"  {key}: {value}")
    if result.card:
        print(f"  card: {result.card.brand or '?'} {result.card.masked_pan or ''} AID {result.card.aid or '-'}")
    if result.open_receipts:
        print(f"  open pre-authorisations: {', '.join(f'{r:04d}' for r in result.open_receipts)}")
    for key, value in result.details.items():
        print(f"  {key}: {value}")
    for line in result.receipt_lines:
        print(f"  | {line}")
