-- A vendor's result correlated by its own reference is looked up by
-- (kind, value) within the references the receiving adapter recorded
-- (system), inside the writer's transaction. external_refs_lookup started
-- with the tenant, which that look-up does not have, so it scanned the
-- table; no statement used it otherwise. Replaced, not added to: the same
-- index entries per reference.
DROP INDEX external_refs_lookup;
CREATE INDEX external_refs_by_system ON external_refs (system, kind, value);
-- Purge deletes a practice's receipts, and the foreign key check of the
-- practice's own delete looks for them again: both scanned the table.
CREATE INDEX inbound_receipts_by_practice ON inbound_receipts (practice_id);
-- Dead letters, newest first, walked only as far as an operator's page:
-- they scanned every job and sorted the dead ones. Partial: jobs die rarely.
CREATE INDEX jobs_dead ON jobs (updated_at) WHERE state = 'dead';
