-- Jobs are looked up by adapter in two live states only: waiting (due, or
-- polling for a follow-up) by next attempt, and in flight by lease expiry
-- (the cluster-wide count that bounds an adapter's concurrency). The one
-- index on (adapter, state, next_attempt_at) held an entry for every job
-- ever stored, most of them done, and every state change added one more:
-- the in-flight count walked the dead entries of the jobs that had passed
-- through `in_flight` since the last vacuum (about 300 blocks a call in
-- the benchmark, growing with the rate). Partial indexes hold live jobs
-- only, so a job that ends leaves both and their scans stay short.

DROP INDEX jobs_due;
CREATE INDEX jobs_waiting ON jobs (adapter, state, next_attempt_at) WHERE state IN ('due', 'polling');
CREATE INDEX jobs_in_flight ON jobs (adapter, lease_expires_at) WHERE state IN ('in_flight', 'poll_in_flight');
