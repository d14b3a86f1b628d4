-- 0003: the registration with the CPO (OCPI credentials). Tokens are stored encrypted.

CREATE TABLE upstream_registration (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    versions_url    TEXT NOT NULL,
    token_b         TEXT NOT NULL,      -- encrypted: the token the CPO presents to us
    token_c         TEXT NOT NULL,      -- encrypted: the token we present to the CPO
    endpoints       TEXT NOT NULL,      -- JSON: the CPO's version details
    registered_at   TEXT NOT NULL
);
