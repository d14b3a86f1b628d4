-- 0010: meter readings in their own append-only table, one row per reading (a session's row no
-- longer carries them and is not rewritten with all of them on every meter value). Rows written
-- before keep their readings inline; the store hands both back the same way. A session's
-- readings go when retention compacts its row (archived with it first), and only then.
-- `compacted` marks such rows (before, a row without "readings" in its JSON was one).

CREATE TABLE meter_readings (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,           -- 0, 1, 2, ... in the order the readings came
    at          TEXT NOT NULL,              -- ISO 8601, as the engine took it
    energy_wh   INTEGER NOT NULL,           -- since the charge started
    trusted     INTEGER NOT NULL CHECK (trusted IN (0, 1)),
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TRIGGER meter_readings_no_update BEFORE UPDATE ON meter_readings
BEGIN SELECT RAISE(ABORT, 'meter readings are append-only'); END;

ALTER TABLE sessions ADD COLUMN compacted INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET compacted = 1 WHERE final = 1 AND instr(data, '"readings":') = 0;
