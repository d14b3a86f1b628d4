"""``evpay terminal ACTION --device URL [--protocol zvt|nexo]``: bench checks of a terminal.

The terminal is built as the daemon builds it: its settings (the protocol's member of the
terminal settings union, from the options that member has) through the driver registry.

Amounts are decimal strings (``--amount 12.34 --currency EUR``), converted exactly. The ZVT
password is never an argument (``ps`` would show it): it comes from ``--password-file`` or
the environment variable named by ``--password-env`` (default EVPAY_ZVT_PASSWORD) — there is
no silent default. Every failure is one line (a JSON object under ``--json``) and an exit
code: 0 approved, 1 the terminal refused or failed, 2 bad input, 69 device unreachable,
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.errors import DriverError, TransportError
from drivers.money import Money
from gateway.cli.lazy_choices import choices_from
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from drivers.base import PaymentTerminal, TerminalResult

ACTIONS = (
    "status",
    "register",
    "preauth",
    "capture",
    "partial-reverse",
    "release",
    "reverse",
    "abort",
    "end-of-day",
    "diagnose",
    "open-preauths",
    "read-card",
    "last-result",
)
_EXIT_FAILED = 1
_EXIT_USAGE = 2
_EXIT_UNAVAILABLE = 69
_CARD_ACTIONS = ("preauth", "read-card")


class _CliError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    term = commands.add_parser(
        "terminal", help="talk to a payment terminal directly (bench checks)"
    )
    term.add_argument("action", choices=ACTIONS)
    term.add_argument(
        "--device",
        required=True,
        help="serial:///dev/ttyUSB0, tcp://host:port, usb://VID:PID (zvt); "
        "http://HOST:PORT/EPASSaleToPOI/3.1 (nexo)",
    )
    choices_from(
        term.add_argument("--protocol", default="zvt"),
        "gateway.runtime.terminal_registry:protocols",
    )
    term.add_argument("--poi-id", default="POI-SIM-1", help="nexo: the POI's POIID")
    term.add_argument("--sale-id", default="EVPAY-BENCH", help="nexo: our SaleID")
    term.add_argument(
        "--state-dir",
        type=Path,
        default=Path(),
        help="nexo: where the driver keeps its ServiceIDs and hold handles (default: here)",
    )
    term.add_argument(
        "--amount", help="decimal amount, e.g. 12.34 (preauth, capture, partial-reverse)"
    )
    term.add_argument("--held", help="the pre-authorised amount (partial-reverse, release)")
    term.add_argument(
        "--currency", default="EUR", help="ISO 4217 code of the amounts (default EUR)"
    )
    term.add_argument(
        "--ref",
        "--receipt",
        dest="ref",
        help="the hold's reference as the terminal gave it (ZVT: its receipt number)",
    )
    term.add_argument(
        "--reference", default="BENCH", help="reference sent with pre-auth and capture"
    )
    term.add_argument(
        "--timeout", type=int, default=30, help="seconds to wait for a card (read-card, preauth)"
    )
    term.add_argument(
        "--password-file", type=Path, help="file holding the terminal's 6-digit ZVT password"
    )
    term.add_argument(
        "--password-env",
        default="EVPAY_ZVT_PASSWORD",
        help="environment variable holding the password (default EVPAY_ZVT_PASSWORD)",
    )
    term.add_argument(
        "--json", action="store_true", help="machine-readable output, errors included"
    )
    term.set_defaults(handler=_terminal)


def _password(args: argparse.Namespace) -> str:
    from drivers.zvt.messages import is_password

    if args.password_file:
        try:
            password = args.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _CliError(
                f"cannot read --password-file {args.password_file}: {exc.strerror}", _EXIT_USAGE
            ) from None
    else:
        found = os.environ.get(args.password_env)
        if found is None:
            raise _CliError(
                f"no ZVT password: set ${args.password_env} or give --password-file (the "
                f"terminal's 6-digit "
                "password; many terminals ship with 000000 — say so explicitly)",
                _EXIT_USAGE,
            )
        password = found.strip()
    if not is_password(password):
        raise _CliError(
            f"the ZVT password must be exactly 6 digits (got {len(password)} characters)",
            _EXIT_USAGE,
        )
    return str(password)


def _money(args: argparse.Namespace, name: str) -> Money:
    text = getattr(args, name)
    if text is None:
        raise _CliError(f"{args.action} needs --{name}", _EXIT_USAGE)
    try:
        return Money.parse(text, args.currency)
    except DriverError as exc:
        raise _CliError(f"--{name}: {exc}", _EXIT_USAGE) from None


def _ref(args: argparse.Namespace) -> str:
    if args.ref is None:
        raise _CliError(
            f"{args.action} needs --ref (the hold's reference as the terminal gave it)",
            _EXIT_USAGE,
        )
    return str(args.ref)


def _settings(args: argparse.Namespace) -> Any:
    """The terminal's settings as a site config would give them, from the options its
    protocol's settings have (a ZVT password only where the protocol has one)."""
    from pydantic import TypeAdapter, ValidationError

    from gateway.runtime import terminal_registry
    from gateway.settings import TerminalSettings

    fields = terminal_registry.driver(args.protocol).settings.model_fields
    offered: dict[str, Any] = {
        "poi_id": args.poi_id,
        "sale_id": args.sale_id,
        "capture_mode": "book_total" if args.action == "capture" else "partial_reversal",
    }
    raw = {k: v for k, v in offered.items() if k in fields}
    if "password" in fields:
        raw["password"] = {"value": _password(args)}
    raw |= {"id": "cli", "protocol": args.protocol, "device": args.device}
    try:
        return TypeAdapter(TerminalSettings).validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise _CliError(f"--{where or 'device'}: {message}", _EXIT_USAGE) from None


def _terminal(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_run(args, _settings(args)))
    except _CliError as exc:
        return _fail(args, str(exc), exc.exit_code)
    except ConfigError as exc:
        return _fail(args, str(exc), _EXIT_USAGE)
    except TransportError as exc:
        return _fail(args, str(exc), _EXIT_UNAVAILABLE)
    except OSError as exc:
        return _fail(args, f"{args.device}: {exc.strerror or exc}", _EXIT_UNAVAILABLE)
    except DriverError as exc:
        return _fail(args, str(exc), _EXIT_USAGE)
    _print(result, args.json)
    if not result.approved and result.operation == "register" and result.result_code == 0x6B:
        print(
            "  hint: the terminal refused the registration: check the ZVT password", file=sys.stderr
        )
    return 0 if result.approved else _EXIT_FAILED


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.json:
        print(json.dumps({"error": message, "exit_code": code}))
    else:
        print(f"evpay terminal: {message}", file=sys.stderr)
    return code


async def _run(args: argparse.Namespace, settings: Any) -> TerminalResult:
    from gateway.runtime import terminal_registry
    from gateway.runtime.terminal_registry import BuildContext

    context = BuildContext(currency=args.currency, state_dir=args.state_dir)
    terminal = terminal_registry.build(settings, context)
    try:
        registration = await terminal.connect()
        if args.action == "register" or not registration.approved:
            return registration
        if args.action in _CARD_ACTIONS and not args.json:
            countdown = asyncio.create_task(_countdown(args.timeout))
            try:
                return await _action(terminal, args)
            finally:
                countdown.cancel()
                print(file=sys.stderr)
        return await _action(terminal, args)
    finally:
        await terminal.close()


async def _countdown(seconds: int) -> None:
    """What the technician sees while the terminal waits for a card."""
    for left in range(seconds, 0, -1):
        print(
            f"\rpresent a card at the terminal: {left:3d} s left ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.sleep(1)
    print(
        "\rstill waiting for the terminal's answer…          ", end="", file=sys.stderr, flush=True
    )


async def _action(t: PaymentTerminal, args: argparse.Namespace) -> TerminalResult:
    action = args.action
    if action == "status":
        return await t.status()
    if action == "preauth":
        return await t.preauthorize(_money(args, "amount"), args.reference)
    if action == "capture":  # book total of the used amount
        amount = _money(args, "amount")
        return await t.capture(_ref(args), amount, amount, args.reference)
    if action == "partial-reverse":  # book --amount of --held, release the rest
        return await t.capture(
            _ref(args), _money(args, "held"), _money(args, "amount"), args.reference
        )
    if action == "release":
        return await t.release(_ref(args), _money(args, "held"))
    if action == "reverse":
        return await t.reverse(_ref(args))
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
    for key in ("result_code", "amount", "ref", "trace_no", "terminal_id"):
        if data[key] is not None:
            value = f"{data[key]:02X}" if key == "result_code" else data[key]
            print(f"  {key}: {value}")
    if result.card:
        print(
            f"  card: {result.card.brand or '?'} {result.card.masked_pan or ''} AID "
            f"{result.card.aid or '-'}"
        )
    if result.open_refs:
        print(f"  open pre-authorisations: {', '.join(result.open_refs)}")
    for key, value in result.details.items():
        print(f"  {key}: {value}")
    for line in result.receipt_lines:
        print(f"  | {line}")
