"""``evpay config validate FILE``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.errors import ConfigError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="check configuration files")
    sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    validate = sub.add_parser(
        "validate",
        help="validate a config file and resolve every secret it references; exit 2 naming each "
        "problem (warnings, e.g. a tariff's step_size a change of power or clock drops, are "
        "printed and exit 0)",
    )
    validate.add_argument("file", type=Path)
    validate.add_argument(
        "--skip-secrets",
        action="store_true",
        help="check the file only (preparing a config away from the site)",
    )
    validate.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    from gateway.payments.tariff_lint import step_size_hazards
    from gateway.payments.tariff_ocpi import tariff_from_ocpi
    from gateway.settings import load_checked, load_settings

    try:
        settings = load_settings(args.file) if args.skip_secrets else load_checked(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for tariff in settings.pricing.tariffs:  # warnings: printed, the exit code stays 0
        for hazard in step_size_hazards(tariff_from_ocpi(tariff)):
            print(f"{args.file}: warning: {hazard.text()}", file=sys.stderr)
    print(
        f"{args.file}: ok (site {settings.site.id}, {len(settings.terminals)} terminal(s), "
        f"upstream {'on' if settings.upstream.enabled else 'off'}, "
        f"charger link {'on' if settings.charger.enabled else 'off'})"
        + ("; secrets not checked" if args.skip_secrets else "; every secret resolved")
    )
    return 0
