-- Work that must run on one hub instance at a time (a folder scan, the
-- store gauges): held by one instance's id until `expires_at` (Unix
-- milliseconds), renewed while it runs, taken over by another once it runs
-- out.
CREATE TABLE singletons (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- Hub instances alive until `expires_at` (their last heartbeat plus a
-- lease): limits the cluster shares (an adapter's rate) are divided by
-- their number.
CREATE TABLE hub_instances (
    id         TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
