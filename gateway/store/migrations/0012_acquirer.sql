-- 0012: the acquirer's online modifications (captures, adjustments, cancels, refunds) and the
-- inbox of its webhooks. A modification is a visible record from the moment it is decided:
-- queued (not yet taken by the acquirer: the uplink was down), received (the acquirer took it;
-- its webhook is awaited until `deadline`), then confirmed or failed by a webhook, or rejected
-- by the acquirer's answer. A received modification past its deadline is overdue: a finding.

CREATE TABLE acquirer_modifications (
    command_key         TEXT PRIMARY KEY,       -- our stable key; the idempotency key derives from it
    acquirer            TEXT NOT NULL,          -- the [acquirers.NAME] that takes it
    kind                TEXT NOT NULL,          -- amount_update, capture, cancel, cancel_by_reference, refund
    payment_reference   TEXT,                   -- the acquirer's reference of the payment (refund: capture)
    merchant_reference  TEXT,                   -- ours, for a cancel by merchant reference
    amount_minor        INTEGER,
    authorised_minor    INTEGER,                -- a capture's ceiling
    currency            TEXT,
    status              TEXT NOT NULL CHECK (status IN
                            ('queued', 'received', 'confirmed', 'failed', 'rejected')),
    acquirer_reference  TEXT,                   -- the modification's reference (Adyen pspReference)
    created_at          TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    received_at         TEXT,
    deadline            TEXT,                   -- the webhook is due by then
    settled_at          TEXT,
    settled_by          TEXT,                   -- the notification's dedupe key
    outcome_reason      TEXT
);
CREATE INDEX acquirer_modifications_status ON acquirer_modifications (status, created_at);
CREATE INDEX acquirer_modifications_reference ON acquirer_modifications (acquirer_reference);

CREATE TABLE acquirer_notifications (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    acquirer            TEXT NOT NULL,
    dedupe_key          TEXT NOT NULL,          -- pspReference|eventCode|success|originalReference
    event_code          TEXT NOT NULL,
    psp_reference       TEXT NOT NULL,
    original_reference  TEXT,
    merchant_reference  TEXT NOT NULL,
    success             INTEGER NOT NULL,
    amount_minor        INTEGER,
    currency            TEXT,
    reason              TEXT NOT NULL,
    event_date          TEXT NOT NULL,
    received_at         TEXT NOT NULL,
    repeats             INTEGER NOT NULL DEFAULT 0,  -- duplicates Adyen sent again
    command_key         TEXT,                   -- the modification it settled; NULL: unmatched
    UNIQUE (acquirer, dedupe_key)
);
