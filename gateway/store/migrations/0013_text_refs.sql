-- 0013: a hold's identity is an opaque text reference the terminal's driver gives (ZVT: its
-- receipt number as decimal text without padding, the form written here; nexo: the POI
-- transaction), no longer ZVT's integer receipt number. Every stored receipt number becomes
-- that text: in the sessions' JSON (holds: receipt_no/booking_receipt -> ref/booking_ref;
-- refunds: receipt_no -> ref; the held result's receipt; the row's money view), in the
-- payments' JSON and in the outbox's payloads. The end-of-day batches' receipt range becomes an
-- optional text range (only ZVT has one) and their totals say their currency (per card group
-- and currency). The journal is not touched: its entries stay as they were hashed (its old
-- end-of-day entries keep "receipts" as numbers), so the chain still verifies.

-- (only holds that still carry receipt_no are rewritten: a hold already in the new shape is
-- kept as it is, so running this again never turns its ref into null)
UPDATE sessions SET data = json_set(data, '$.holds', (
    SELECT json_group_array(json(
        CASE WHEN json_type(h.value, '$.receipt_no') IS NULL THEN h.value
        WHEN json_type(h.value, '$.booking_receipt') IS NULL
        THEN json_remove(
            json_set(h.value, '$.ref', CAST(json_extract(h.value, '$.receipt_no') AS TEXT)),
            '$.receipt_no')
        ELSE json_remove(
            json_set(h.value,
                '$.ref', CAST(json_extract(h.value, '$.receipt_no') AS TEXT),
                '$.booking_ref', CAST(json_extract(h.value, '$.booking_receipt') AS TEXT)),
            '$.receipt_no', '$.booking_receipt')
        END))
    FROM (SELECT value FROM json_each(sessions.data, '$.holds') ORDER BY key) AS h))
WHERE json_type(data, '$.holds') = 'array' AND json_array_length(data, '$.holds') > 0;

UPDATE sessions SET data = json_set(data, '$.refunds', (
    SELECT json_group_array(json(
        CASE WHEN json_type(r.value, '$.receipt_no') IS NULL THEN r.value
        ELSE json_remove(
            json_set(r.value, '$.ref', CAST(json_extract(r.value, '$.receipt_no') AS TEXT)),
            '$.receipt_no')
        END))
    FROM (SELECT value FROM json_each(sessions.data, '$.refunds') ORDER BY key) AS r))
WHERE json_type(data, '$.refunds') = 'array' AND json_array_length(data, '$.refunds') > 0;

-- the held result: [approved, receipt_no, amount_minor]
UPDATE sessions SET data = json_set(data, '$.held_result[1]',
    CAST(json_extract(data, '$.held_result[1]') AS TEXT))
WHERE json_type(data, '$.held_result[1]') = 'integer';

-- the row's money view (and a row from before holds were a list: its one receipt)
UPDATE sessions SET data = json_remove(
    json_set(data, '$.ref', CAST(json_extract(data, '$.receipt_no') AS TEXT)), '$.receipt_no')
WHERE json_type(data, '$.receipt_no') IS NOT NULL;

UPDATE payments SET data = json_remove(
    json_set(data, '$.ref', CAST(json_extract(data, '$.receipt_no') AS TEXT)), '$.receipt_no')
WHERE json_type(data, '$.receipt_no') IS NOT NULL;
UPDATE payments SET data = json_remove(
    json_set(data, '$.booking_ref', CAST(json_extract(data, '$.booking_receipt') AS TEXT)),
    '$.booking_receipt')
WHERE json_type(data, '$.booking_receipt') IS NOT NULL;

UPDATE outbox SET payload = json_remove(
    json_set(payload, '$.ref', CAST(json_extract(payload, '$.receipt_no') AS TEXT)),
    '$.receipt_no')
WHERE json_valid(payload) AND json_type(payload, '$.receipt_no') IS NOT NULL;

CREATE TABLE end_of_day_rebuilt (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    terminal       TEXT NOT NULL,
    period_start   TEXT,
    at             TEXT NOT NULL,
    currency       TEXT NOT NULL CHECK (length(currency) = 3),
    total_minor    INTEGER,
    batch_first    TEXT,                    -- the batch's first receipt, where the protocol has a range
    batch_last     TEXT,
    totals         TEXT NOT NULL,           -- JSON [{"brand", "currency", "count", "amount_minor"}]
    step_key       TEXT NOT NULL
);
INSERT INTO end_of_day_rebuilt (id, terminal, period_start, at, currency, total_minor, batch_first,
    batch_last, totals, step_key)
    SELECT id, terminal, period_start, at, currency, total_minor, CAST(first_receipt AS TEXT),
        CAST(last_receipt AS TEXT),
        (SELECT json_group_array(json(
            CASE WHEN json_type(t.value, '$.currency') IS NULL
            THEN json_set(t.value, '$.currency', end_of_day.currency) ELSE t.value END))
         FROM (SELECT value FROM json_each(end_of_day.totals) ORDER BY key) AS t),
        step_key
    FROM end_of_day ORDER BY id;
DROP TABLE end_of_day;
ALTER TABLE end_of_day_rebuilt RENAME TO end_of_day;
CREATE INDEX end_of_day_terminal ON end_of_day(terminal, at);
