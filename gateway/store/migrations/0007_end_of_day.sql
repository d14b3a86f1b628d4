-- 0007: the terminals' end-of-day batches: when each closed, the period it covers (since the
-- previous one), and the totals the terminal reported per card group, stored beside the
-- journal's captures for the same period (reconciliation reads both).

CREATE TABLE end_of_day (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal       TEXT NOT NULL,
    period_start   TEXT,                    -- the previous end of day on this terminal (NULL: the first)
    at             TEXT NOT NULL,           -- when the terminal closed the batch
    currency       TEXT NOT NULL CHECK (length(currency) = 3),
    total_minor    INTEGER,
    first_receipt  INTEGER,
    last_receipt   INTEGER,
    totals         TEXT NOT NULL,           -- JSON [{"brand", "count", "amount_minor"}]
    step_key       TEXT NOT NULL REFERENCES steps(key)
);
CREATE INDEX end_of_day_terminal ON end_of_day(terminal, at);
CREATE INDEX sessions_updated ON sessions(updated_at);
