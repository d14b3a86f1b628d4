-- 0006: signed checkpoints of the journal's chain head. The device key (Ed25519) signs the
-- hash of the row at `seq`; a verifier holding the device's public key then knows every row up
-- to `seq` is the one the gateway wrote, and that the journal was at least that long.

CREATE TABLE journal_checkpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER NOT NULL,
    head_hash   TEXT NOT NULL,
    at          TEXT NOT NULL,
    public_key  TEXT NOT NULL,              -- hex of the raw Ed25519 public key that signed
    signature   TEXT NOT NULL               -- hex, over checkpoint_message(site, seq, head_hash, at)
);
CREATE TRIGGER journal_checkpoints_no_update BEFORE UPDATE ON journal_checkpoints
BEGIN SELECT RAISE(ABORT, 'journal checkpoints are append-only'); END;
CREATE TRIGGER journal_checkpoints_no_delete BEFORE DELETE ON journal_checkpoints
BEGIN SELECT RAISE(ABORT, 'journal checkpoints are append-only'); END;
