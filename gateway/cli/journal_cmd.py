"""``evpay journal verify|checkpoint|export|verify-export|keygen|key``: the audit trail.

``verify`` checks the database's chain and signed checkpoints and names every row that was
edited, deleted, inserted, reordered or cut off (exit 0 intact, 1 tampered). ``export`` writes
one session's or one period's trail as JSON; ``verify-export`` checks such a file offline, with
no database (exit 0 valid, 1 invalid, 2 not an export).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.stores import open_existing
from gateway.errors import BadInput, GatewayError

if TYPE_CHECKING:
    from gateway.store.audit import AuditReport

_OK, _TAMPERED = 0, 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    journal = commands.add_parser("journal", help="verify and export the signed journal")
    sub = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    check = sub.add_parser(
        "verify", help="check the chain and its signed checkpoints: exit 0 intact, 1 tampered"
    )
    sign = sub.add_parser("checkpoint", help="sign the journal's head now with the device key")
    export = sub.add_parser("export", help="write a session's or a period's audit trail as JSON")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", help="a session id")
    which.add_argument(
        "--from", dest="start", type=when, help="ISO time (UTC unless it carries an offset)"
    )
    export.add_argument("--to", dest="end", type=when, help="ISO time, exclusive (default: now)")
    export.add_argument("--out", type=Path, help="file to write (default: stdout)")
    offline = sub.add_parser(
        "verify-export", help="check an export offline: exit 0 valid, 1 invalid, 2 unreadable"
    )
    offline.add_argument("file", type=Path)
    keygen = sub.add_parser(
        "keygen", help="make a new device key (Ed25519 PEM) for [journal] signing_key"
    )
    keygen.add_argument("--out", type=Path, required=True)
    key = sub.add_parser("key", help="print the device's public key (hex), for auditors")
    for p in (check, sign, export, key):
        p.add_argument("--config", type=Path, required=True)
    for p in (check, offline):
        p.add_argument(
            "--public-key",
            help="the device's public key (hex); default: from the config's signing key",
        )
        p.add_argument("--json", action="store_true")
    check.set_defaults(handler=_verify)
    sign.set_defaults(handler=_checkpoint)
    export.set_defaults(handler=_export)
    offline.set_defaults(handler=_verify_export)
    keygen.set_defaults(handler=_keygen)
    key.set_defaults(handler=_key)


def when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time like 2026-11-26T00:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _trusted_key(args: argparse.Namespace) -> str | None:
    from gateway.settings import journal_public_key, load_settings

    if args.public_key:
        given = str(args.public_key).strip().lower()
        if len(given) != 64 or any(c not in "0123456789abcdef" for c in given):
            raise BadInput(
                f"--public-key: not an Ed25519 public key (64 hex digits, as `evpay journal key` "
                f"prints it; got {len(given)} characters)"
            )
        return given
    config = getattr(args, "config", None)
    return None if config is None else journal_public_key(load_settings(config))


def _verify(args: argparse.Namespace) -> int:
    trusted = _trusted_key(args)
    store = open_existing(args.config)
    try:
        report = store.verify_journal(trusted)
        if not report.ok and args.public_key:
            _wrong_key(report, store.verify_journal(None))
    finally:
        store.close()
    return _report(report, args.json, "journal")


def _wrong_key(report: AuditReport, own: AuditReport) -> None:
    """BadInput when the trail is sound under the key its checkpoints carry and fails only its
    signatures under the key given: a mistyped key, not tampering."""
    signatures = {"forged_checkpoint", "forged_cut"}
    if own.ok and own.key and all(f.kind in signatures for f in report.findings):
        raise BadInput(
            f"wrong key: the checkpoints are signed by {own.key[:16]}…, not by the --public-key "
            f"given ({(report.key or '')[:16]}…); check the key (`evpay journal key` on the "
            "device)"
        )


def _verify_export(args: argparse.Namespace) -> int:
    from gateway.store.export import verify as verify_export

    try:
        text = args.file.read_bytes()
    except OSError as exc:
        raise GatewayError(f"cannot read {args.file}: {exc.strerror}") from None
    report = verify_export(text, _trusted_key(args))
    if not report.ok and args.public_key:
        _wrong_key(report, verify_export(text, None))
    return _report(report, args.json, str(args.file))


def _report(report: AuditReport, as_json: bool, what: str) -> int:
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "rows": report.rows,
                    "checkpoints": report.checkpoints,
                    "covered_to": report.covered_to,
                    "uncovered_rows": report.uncovered,
                    "public_key": report.key,
                    "notes": list(report.notes),
                    "findings": [
                        {"seq": f.seq, "kind": f.kind, "text": f.text} for f in report.findings
                    ],
                }
            )
        )
    else:
        print(
            f"{what}: {'INTACT' if report.ok else 'TAMPERED'}: {report.rows} rows, "
            f"{report.checkpoints} signed "
            f"checkpoint(s), proven up to row {report.covered_to or 0}"
        )
        for f in report.findings:
            print(f"  {f.kind}: {f.text}")
        if report.ok and report.uncovered:
            print(f"  {report.uncovered} newest row(s) not yet covered by a signed checkpoint")
        for note in report.notes:
            print(f"  note: {note}")
    return _OK if report.ok else _TAMPERED


def _checkpoint(args: argparse.Namespace) -> int:
    from gateway.settings import journal_signing_key, load_settings

    key = journal_signing_key(load_settings(args.config))
    if key is None:
        raise GatewayError(
            f"{args.config}: no [journal] signing_key configured; make one with `evpay journal "
            f"keygen`"
        )
    store = open_existing(args.config, write=True)
    try:
        cp = store.sign_journal(key)
    finally:
        store.close()
    print(
        "the newest checkpoint already covers the journal"
        if cp is None
        else f"checkpoint {cp.id}: row {cp.seq}"
    )
    return _OK


def _export(args: argparse.Namespace) -> int:
    from gateway.settings import load_settings
    from gateway.store.files import write_private

    store = open_existing(args.config)
    try:
        doc = store.journal_export(session=args.session, start=args.start, end=args.end)
    finally:
        store.close()
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_private(args.out, text.encode("utf-8"), load_settings(args.config).storage.group)
        full = sum(1 for r in doc["rows"] if "data" in r)
        print(
            f"{args.out}: {full} row(s) of {doc['selection']}, {len(doc['rows']) - full} link(s), "
            f"{len(doc['checkpoints'])} checkpoint(s)"
        )
    return _OK


def _keygen(args: argparse.Namespace) -> int:
    from gateway.store.journal import new_signing_key

    if args.out.exists():
        raise GatewayError(f"{args.out} exists; refusing to overwrite a device key")
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(new_signing_key())
    print(
        f"{args.out}: new Ed25519 device key (mode 0600); set [journal] signing_key = "
        f'{{ file = "{args.out}" }}'
    )
    return _OK


def _key(args: argparse.Namespace) -> int:
    from gateway.settings import journal_public_key, load_settings

    public = journal_public_key(load_settings(args.config))
    if public is None:
        raise GatewayError(f"{args.config}: no [journal] signing_key configured")
    print(public)
    return _OK
