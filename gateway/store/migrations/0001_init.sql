-- 0001: charging sessions, payments, applied steps, the hash-chained journal, outbox, inbox.

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    final       INTEGER NOT NULL DEFAULT 0 CHECK (final IN (0, 1)),
    data        TEXT NOT NULL,              -- JSON: the engine's session record
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX sessions_open ON sessions(final, updated_at);

CREATE TABLE payments (
    id            TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sessions(id),
    kind          TEXT NOT NULL,            -- preauth, topup, capture, release, reversal
    state         TEXT NOT NULL,
    amount_minor  INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT NOT NULL CHECK (length(currency) = 3),
    data          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX payments_session ON payments(session_id);

-- Every applied step, by its idempotency key: applying the same step twice is a no-op.
CREATE TABLE steps (
    key         TEXT PRIMARY KEY,
    applied_at  TEXT NOT NULL
);

CREATE TABLE journal (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    step_key    TEXT NOT NULL REFERENCES steps(key),
    at          TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE
);
CREATE INDEX journal_entity ON journal(entity, entity_id, seq);
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL UNIQUE,
    object_key       TEXT NOT NULL,         -- messages of one object go out in id order
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    step_key         TEXT NOT NULL REFERENCES steps(key),
    created_at       TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    done_at          TEXT
);
CREATE INDEX outbox_head ON outbox(object_key, status, id);
CREATE INDEX outbox_status ON outbox(status, id);

CREATE TABLE inbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    TEXT NOT NULL UNIQUE,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    processed_at  TEXT
);
CREATE INDEX inbox_unprocessed ON inbox(processed_at, id);
