-- Each practice event is its own audit record: its place in the tenant's
-- chain and its link hashes are stored on the event, instead of a copy of
-- the event in audit_log (which doubled the rows, index entries and WAL
-- pages of every change). audit_log keeps refused calls, purges, and the
-- records of events recorded before this migration (audit_seq NULL here)
-- or removed by a purge (moved there first).
ALTER TABLE events ADD COLUMN audit_seq INTEGER;
ALTER TABLE events ADD COLUMN audit_prev_hash TEXT;
ALTER TABLE events ADD COLUMN audit_hash TEXT;
