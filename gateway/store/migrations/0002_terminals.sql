-- 0002: the terminals the gateway has seen, what they reported at registration and last contact.

CREATE TABLE terminals (
    id           TEXT PRIMARY KEY,            -- our configured id
    device       TEXT NOT NULL,               -- device URL it was last reached at
    protocol     TEXT NOT NULL,
    state        TEXT NOT NULL,               -- registered, unreachable, ...
    data         TEXT NOT NULL,               -- JSON: TID, software version, status byte
    updated_at   TEXT NOT NULL
);
