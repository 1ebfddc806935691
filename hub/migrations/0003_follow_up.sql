-- Deliveries whose result is fetched later (ModI NONBLOCK_PULL_*). After the
-- vendor accepted the request the job waits in state 'polling' (or
-- 'poll_in_flight' while a poll runs) with what the adapter needs to ask
-- again, so polling survives restarts and is bounded by the deadline.
ALTER TABLE jobs ADD COLUMN follow_up TEXT;                           -- opaque to the hub (a status URL)
ALTER TABLE jobs ADD COLUMN follow_up_polls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN follow_up_deadline INTEGER;               -- Unix milliseconds
