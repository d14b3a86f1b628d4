"""``evpay meter verify OCMF [--key HEX | --key-file F] [--json]``: check one signed meter record
the way the transparency software does. Exit 0 valid, 1 invalid, 2 unreadable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_VALID, _INVALID, _UNREADABLE = 0, 1, 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    meter = commands.add_parser("meter", help="signed meter values (OCMF)")
    sub = meter.add_subparsers(dest="meter_command", required=True, metavar="ACTION")
    check = sub.add_parser(
        "verify", help="verify one OCMF record: exit 0 valid, 1 invalid, 2 unreadable"
    )
    check.add_argument(
        "record", help="OCMF|{…}|{…} (or its hex form), or @FILE to read it from a file"
    )
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("--key", help="the meter's public key: DER or a bare point, hex or base64")
    where.add_argument("--key-file", type=Path, help="a file holding the public key")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from gateway.fiscal.ocmf import OcmfError, load_key, parse, verify

    try:
        text = (
            Path(args.record[1:]).read_text(encoding="utf-8")
            if args.record.startswith("@")
            else args.record
        )
        key_text = args.key if args.key is not None else args.key_file.read_text(encoding="utf-8")
        record = parse(text)
        verdict = verify(record, load_key(key_text, record.algorithm))
    except (OcmfError, OSError) as exc:
        message = (
            str(exc)
            if isinstance(exc, OcmfError)
            else f"cannot read {exc.filename}: {exc.strerror}"
        )
        print(
            json.dumps({"readable": False, "error": message})
            if args.json
            else f"unreadable: {message}"
        )
        return _UNREADABLE
    readings = [
        {"at": r.at, "energy_wh": str(r.energy_wh), "status": r.status, "kind": r.kind}
        for r in record.readings
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "readable": True,
                    "valid": verdict.valid,
                    "reason": verdict.reason,
                    "payload_sha256": record.digest,
                    "meter": record.payload.get("MS"),
                    "readings": readings,
                }
            )
        )
    else:
        print(f"{'VALID' if verdict.valid else 'INVALID'}: {verdict.reason}")
        print(
            f"  meter {record.payload.get('MS', '?')} ({record.payload.get('MV', '?')}), payload "
            f"{record.digest[:16]}…"
        )
        for r in readings:
            print(
                f"  {r['kind'] or '-':<2} {r['at']:<34} {r['energy_wh']} Wh  status {r['status']}"
            )
    return _VALID if verdict.valid else _INVALID
