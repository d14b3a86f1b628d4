-- 0008: leaner steps. Every step now writes at least one journal entry, so the journal's
-- step_key is the idempotency key and the steps table, which repeated it, goes (its keys of
-- steps that wrote no journal entry are kept in legacy_steps, so those stay idempotent too).
-- The journal loses the UNIQUE index on hash (the chain audit already refuses a repeated or
-- moved row) and gains one on step_key; the open-sessions index no longer holds updated_at,
-- which changed on every step. journal, outbox and end_of_day are rebuilt to drop their
-- foreign keys to steps; the journal keeps its rows, hashes and AUTOINCREMENT counter as they
-- were, so a chain cut short before this migration still shows as cut short after it.

CREATE TABLE legacy_steps (key TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO legacy_steps SELECT key FROM steps WHERE key NOT IN (SELECT step_key FROM journal);

CREATE TEMP TABLE journal_counter AS SELECT seq FROM sqlite_sequence WHERE name = 'journal';

CREATE TABLE journal_rebuilt (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    step_key    TEXT NOT NULL,
    at          TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
INSERT INTO journal_rebuilt (seq, step_key, at, entity, entity_id, kind, data, prev_hash, hash)
    SELECT seq, step_key, at, entity, entity_id, kind, data, prev_hash, hash FROM journal ORDER BY seq;
DROP TABLE journal;
ALTER TABLE journal_rebuilt RENAME TO journal;
DELETE FROM sqlite_sequence WHERE name = 'journal';
INSERT INTO sqlite_sequence (name, seq) SELECT 'journal', seq FROM temp.journal_counter;
DROP TABLE temp.journal_counter;
CREATE INDEX journal_entity ON journal(entity, entity_id, seq);
CREATE INDEX journal_step ON journal(step_key);
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;

CREATE TABLE outbox_rebuilt (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL UNIQUE,
    object_key       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    step_key         TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    done_at          TEXT
);
INSERT INTO outbox_rebuilt SELECT id, message_id, object_key, kind, payload, step_key, created_at, status,
    attempts, next_attempt_at, last_error, done_at FROM outbox ORDER BY id;
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;
CREATE INDEX outbox_head ON outbox(object_key, status, id);
CREATE INDEX outbox_status ON outbox(status, id);

CREATE TABLE end_of_day_rebuilt (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal       TEXT NOT NULL,
    period_start   TEXT,
    at             TEXT NOT NULL,
    currency       TEXT NOT NULL CHECK (length(currency) = 3),
    total_minor    INTEGER,
    first_receipt  INTEGER,
    last_receipt   INTEGER,
    totals         TEXT NOT NULL,
    step_key       TEXT NOT NULL
);
INSERT INTO end_of_day_rebuilt SELECT id, terminal, period_start, at, currency, total_minor, first_receipt,
    last_receipt, totals, step_key FROM end_of_day ORDER BY id;
DROP TABLE end_of_day;
ALTER TABLE end_of_day_rebuilt RENAME TO end_of_day;
CREATE INDEX end_of_day_terminal ON end_of_day(terminal, at);

DROP TABLE steps;

DROP INDEX sessions_open;
CREATE INDEX sessions_open ON sessions(created_at) WHERE final = 0;
