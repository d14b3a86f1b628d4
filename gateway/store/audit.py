"""Checking the journal's hash chain and its signed checkpoints: pure, no SQLite.

The same check runs on the database (``evpay journal verify``) and, offline, on an export
(``evpay journal verify-export``). Each row's hash covers the previous row's hash and the row
itself, so a row edited in place no longer matches its hash, and a row deleted, inserted or
moved breaks the link of the row after it. Which of those happened is read from *where* the
broken link points. The chain alone cannot show a cut-off tail or a re-hashed rewrite of the
whole chain: the device's signed checkpoints can. A checkpoint signs the hash of one row with
the device key (Ed25519); every row up to it is then proven, and the journal must reach it.
Rows after the newest checkpoint are reported as not yet covered: nothing proves them yet.

An export carries full rows for what was selected and only (seq, prev_hash, hash) for the
rows between them, up to the next checkpoint, so a verifier checks the links without the
database and without seeing other sessions' data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
EXPORT_FORMAT = "evpay-journal-export/1"


@dataclass(frozen=True, slots=True)
class Content:
    step_key: str
    at: str
    entity: str
    entity_id: str
    kind: str
    data: str  # the stored JSON text, byte-exact (it is what was hashed)


@dataclass(frozen=True, slots=True)
class ChainRow:
    seq: int
    prev_hash: str
    hash: str
    content: Content | None = None  # None: a link row of an export (not selected)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    seq: int
    head_hash: str
    at: str
    public_key: str
    signature: str


@dataclass(frozen=True, slots=True)
class Cut:
    """Rows up to ``seq`` were archived (``archive``) and removed; the journal goes on at
    ``seq + 1``, chained to ``head_hash``. Signed by the device key like a checkpoint."""

    id: int
    seq: int
    head_hash: str
    archive: str
    archive_sha256: str
    at: str
    public_key: str
    signature: str


def cut_message(seq: int, head_hash: str, archive_sha256: str, at: str) -> bytes:
    return f"evpay-journal-cut/1\x1f{seq}\x1f{head_hash}\x1f{archive_sha256}\x1f{at}".encode()


@dataclass(frozen=True, slots=True)
class Finding:
    seq: int | None  # the row (or checkpoint id, for checkpoint findings) it is about
    kind: str  # edited, replaced, deleted, inserted, reordered, truncated, forged_checkpoint, ...
    text: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    rows: int
    checkpoints: int
    findings: tuple[Finding, ...]
    covered_to: int | None  # the newest row a valid checkpoint proves
    last_seq: int | None
    key: str | None  # the public key the checkpoints were checked against
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def uncovered(self) -> int:
        """Rows after the newest valid checkpoint (nothing proves them yet)."""
        if self.last_seq is None:
            return 0
        return self.last_seq - (self.covered_to or 0)


def row_hash(prev_hash: str, c: Content) -> str:
    material = "\x1f".join((prev_hash, c.step_key, c.at, c.entity, c.entity_id, c.kind, c.data))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def checkpoint_message(seq: int, head_hash: str, at: str) -> bytes:
    """What the device key signs: the row a checkpoint proves, and when."""
    return f"evpay-journal-checkpoint/1\x1f{seq}\x1f{head_hash}\x1f{at}".encode()


def signature_valid(cp: Checkpoint, public_key: str) -> bool:
    return _signed(checkpoint_message(cp.seq, cp.head_hash, cp.at), cp.signature, public_key)


def _signed(message: bytes, signature: str, public_key: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
        key.verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def audit(
    rows: Sequence[ChainRow],
    checkpoints: Sequence[Checkpoint],
    trusted_key: str | None,
    *,
    from_genesis: bool = True,
    written: int | None = None,
    cut: Cut | None = None,
) -> AuditReport:
    """Check ``rows`` (in seq order) and ``checkpoints``. ``from_genesis``: the rows are the
    whole journal (the first links to GENESIS; checkpoint ids must have no gaps); otherwise an
    export, whose first row is proven only by a checkpoint after it. ``written``: how many rows
    the database says it ever numbered (SQLite's AUTOINCREMENT counter), to see a cut-off tail.
    ``trusted_key``: the device's public key (hex); None takes the checkpoints' own key, which
    proves integrity only if that key is compared with the device's by other means. ``cut``:
    the newest retention cut: the rows start after it, chained to the row it archived."""
    key = (
        trusted_key
        or (checkpoints[0].public_key if checkpoints else None)
        or (cut.public_key if cut else None)
    )
    findings: list[Finding] = []
    if cut is not None:
        message = cut_message(cut.seq, cut.head_hash, cut.archive_sha256, cut.at)
        if key is None or cut.public_key != key or not _signed(message, cut.signature, key):
            findings.append(
                Finding(
                    cut.seq,
                    "forged_cut",
                    f"cut {cut.id} (rows up to {cut.seq}): the signature is "
                    "not the device key's: rows were removed without a signed cut",
                )
            )
        elif rows and rows[0].seq != cut.seq + 1:
            findings.append(
                Finding(
                    cut.seq + 1,
                    "deleted",
                    f"rows {cut.seq + 1}..{rows[0].seq - 1} after the cut at "
                    f"{cut.seq} are missing (deleted)",
                )
            )
    findings += _chain(rows, from_genesis, cut.head_hash if cut else GENESIS)
    notes: list[str] = []
    if trusted_key is None and key is not None:
        notes.append(
            f"checkpoints checked against the key they carry ({key[:16]}…): compare it with the "
            f"device's"
        )
    by_seq = {r.seq: r for r in rows}
    last = rows[-1].seq if rows else None
    covered: int | None = None
    for i, cp in enumerate(checkpoints):
        if from_genesis and i and cp.id != checkpoints[i - 1].id + 1:
            gap = f"{checkpoints[i - 1].id + 1}..{cp.id - 1}"
            findings.append(
                Finding(cp.id, "checkpoint_deleted", f"checkpoints {gap} are missing (deleted)")
            )
        if key is None or cp.public_key != key or not signature_valid(cp, key):
            findings.append(
                Finding(
                    cp.id,
                    "forged_checkpoint",
                    f"checkpoint {cp.id} (row {cp.seq}): the signature "
                    "is not the device key's (forged or edited checkpoint)",
                )
            )
            continue
        row = by_seq.get(cp.seq)
        if cut is not None and cp.seq <= cut.seq and row is None:
            continue  # archived with the cut: the archive file holds the row it signed
        if last is None or cp.seq > last:
            findings.append(
                Finding(
                    cp.seq,
                    "truncated",
                    f"the journal ends at row {last or 0} but checkpoint "
                    f"{cp.id} signed row {cp.seq}: rows were cut off the end",
                )
            )
        elif row is None:
            if from_genesis or rows[0].seq <= cp.seq:
                findings.append(
                    Finding(
                        cp.seq, "deleted", f"row {cp.seq}, signed by checkpoint {cp.id}, is missing"
                    )
                )
        elif row.hash != cp.head_hash:
            findings.append(
                Finding(
                    cp.seq,
                    "replaced",
                    f"row {cp.seq} is not the row checkpoint {cp.id} signed: "
                    "the journal up to it was rewritten",
                )
            )
        else:
            covered = max(covered or 0, cp.seq)
    if written is not None and last is not None and written > last:
        missing = f"rows {last + 1}..{written} were written but are missing at the end (cut off)"
        findings.append(Finding(last + 1, "truncated", missing))
    return AuditReport(
        len(rows), len(checkpoints), tuple(findings), covered, last, key, tuple(notes)
    )


def _chain(
    rows: Sequence[ChainRow], from_genesis: bool, first_prev: str = GENESIS
) -> list[Finding]:
    position = {r.hash: i for i, r in enumerate(rows)}
    referenced = {r.prev_hash for r in rows}
    out: list[Finding] = []
    expected: str | None = first_prev if from_genesis else None
    for i, r in enumerate(rows):
        if r.content is not None and row_hash(r.prev_hash, r.content) != r.hash:
            out.append(
                Finding(
                    r.seq, "edited", f"row {r.seq}: its content does not match its hash (edited)"
                )
            )
        elif expected is not None and r.prev_hash != expected:
            out.append(_broken_link(rows, i, position, referenced))
        expected = r.hash
    if (
        from_genesis
        and first_prev == GENESIS
        and rows
        and rows[0].seq != 1
        and rows[0].prev_hash == GENESIS
    ):
        out.append(
            Finding(
                rows[0].seq,
                "reordered",
                f"row {rows[0].seq} is the chain's first row but not numbered 1",
            )
        )
    return out


def _broken_link(
    rows: Sequence[ChainRow], i: int, position: dict[str, int], referenced: set[str]
) -> Finding:
    r = rows[i]
    before = rows[i - 1] if i else None
    target = position.get(r.prev_hash)
    if target is not None and target > i:
        return Finding(
            r.seq,
            "reordered",
            f"row {r.seq} is chained after row {rows[target].seq}, which comes "
            "later: rows were reordered",
        )
    if target is not None and target < i - 1:
        between = rows[target + 1 : i]
        if not any(x.hash in referenced for x in between):
            seqs = (
                f"{between[0].seq}" if len(between) == 1 else f"{between[0].seq}..{between[-1].seq}"
            )
            return Finding(
                between[0].seq,
                "inserted",
                f"row {seqs} was inserted: row {r.seq} is chained to row {rows[target].seq}",
            )
        return Finding(
            r.seq,
            "reordered",
            f"row {r.seq} is chained after row {rows[target].seq}, which is not the "
            "row before it: rows were reordered",
        )
    first_missing = before.seq + 1 if before else 1
    if r.seq > first_missing:
        gap = f"{first_missing}" if r.seq - first_missing == 1 else f"{first_missing}..{r.seq - 1}"
        return Finding(
            first_missing,
            "deleted",
            f"row {gap} is missing (deleted): row {r.seq} is chained to it",
        )
    if before is None:
        return Finding(
            r.seq, "replaced", f"row {r.seq} does not start the chain: rows before it were removed"
        )
    why = (
        f"row {before.seq} was rewritten (edited and re-hashed) or rows were deleted and renumbered"
    )
    return Finding(
        before.seq, "replaced", f"row {r.seq} is chained to a row that is not in the journal: {why}"
    )
