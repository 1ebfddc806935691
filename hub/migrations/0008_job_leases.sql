-- Who runs a job in flight (a hub instance's id) and until when (ms since
-- the epoch) its claim holds without renewal. Both are NULL when the job is
-- not in flight. A job whose lease ends without a result is due again.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at INTEGER;
-- Jobs left in flight by a hub without leases: their leases are over.
UPDATE jobs SET lease_owner = '', lease_expires_at = 0
    WHERE state IN ('in_flight', 'poll_in_flight');
CREATE INDEX jobs_by_lease ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
