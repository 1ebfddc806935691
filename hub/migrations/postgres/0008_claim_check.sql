-- Claims of an adapter's work (a synchronous submission claiming its own
-- delivery, a worker claiming due jobs) must keep its max_concurrency true
-- for the whole cluster. A claim counts without a lock, claims, and checks
-- at its end under the adapter's claim lock, held to the commit. As two
-- statements (lock, count) the lock was held while the count went back to
-- the hub and the commit came back: every claim of an adapter waited for
-- those round trips of the one before it. As this function, sent after the
-- transaction's writes together with its COMMIT, the lock is held for the
-- server's own work only. Over the limit it raises RA001: the transaction
-- rolls back, and the hub stores the practice due or claims again.
CREATE FUNCTION raccordo_claim_within_limit(lock_class INT, adapter_name TEXT, now_ms BIGINT,
                                            max_in_flight BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_class, hashtext(current_schema() || '/' || adapter_name));
    -- A new statement: it sees every claim committed before the lock.
    IF (SELECT COUNT(*) FROM jobs
        WHERE adapter = adapter_name AND state IN ('in_flight', 'poll_in_flight')
          AND lease_expires_at > now_ms) > max_in_flight THEN
        RAISE EXCEPTION 'adapter % is at its max_concurrency', adapter_name USING ERRCODE = 'RA001';
    END IF;
END
$$;
