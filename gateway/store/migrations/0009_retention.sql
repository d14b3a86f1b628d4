-- 0009: retention. A cut archives the journal's oldest rows (up to `seq`, all of sessions final
-- for longer than the retention period) into an export file, then removes them. The device key
-- signs the cut (the row's hash, the archive's SHA-256), so the chain that remains is still
-- verifiable from its first row, and nobody without the key can remove rows and call it a cut.
-- The journal's delete trigger now lets through only rows at or below the newest cut.

CREATE TABLE journal_cuts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    seq             INTEGER NOT NULL,       -- the last row archived; the journal goes on at seq + 1
    head_hash       TEXT NOT NULL,          -- that row's hash: the next row's prev_hash
    archive         TEXT NOT NULL,          -- the export file's name (evpay-journal-export/1)
    archive_sha256  TEXT NOT NULL,
    at              TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    signature       TEXT NOT NULL           -- hex, over cut_message(seq, head_hash, archive_sha256, at)
);
CREATE TRIGGER journal_cuts_no_update BEFORE UPDATE ON journal_cuts
BEGIN SELECT RAISE(ABORT, 'journal cuts are append-only'); END;
CREATE TRIGGER journal_cuts_no_delete BEFORE DELETE ON journal_cuts
BEGIN SELECT RAISE(ABORT, 'journal cuts are append-only'); END;

DROP TRIGGER journal_no_delete;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
WHEN OLD.seq > coalesce((SELECT max(seq) FROM journal_cuts), 0)
BEGIN SELECT RAISE(ABORT, 'the journal is append-only (rows go only up to a signed cut)'); END;
