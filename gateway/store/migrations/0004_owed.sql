-- 0004: what a session owes (priced but not captured with evidence), queryable for
-- reconciliation and `evpay sessions list --owing`; the terminal sweep never releases their holds.

ALTER TABLE sessions ADD COLUMN owed_minor INTEGER NOT NULL DEFAULT 0 CHECK (owed_minor >= 0);
ALTER TABLE sessions ADD COLUMN terminal TEXT;
CREATE INDEX sessions_owing ON sessions(owed_minor) WHERE owed_minor > 0;
