-- 0005: where the registration with the CPO stands, and why (for evpay status, /health, the
-- kiosk's refusal and the outbox listing): registered, waiting, or refused with the CPO's message.

CREATE TABLE upstream_status (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    state   TEXT NOT NULL CHECK (state IN ('registered', 'not_registered')),
    reason  TEXT NOT NULL,
    at      TEXT NOT NULL
);
