-- Outcome data, as SQLite's migration 0013: on the practice, the fields
-- vendors' results set so far (a JSON object as text, NULL when none); on
-- an event, the fields its result added or changed. Text, not jsonb: the
-- audit record hashes the bytes as stored.
ALTER TABLE practices ADD COLUMN outcome_data TEXT;
ALTER TABLE events ADD COLUMN outcome_data TEXT;
