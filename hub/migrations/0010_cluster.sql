-- Work that must run on one hub instance at a time (a folder scan, the
-- store gauges): held by one instance's id until `expires_at` (ms since the
-- epoch), renewed while it runs, taken over by another once it runs out.
CREATE TABLE singletons (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Hub instances alive until `expires_at` (their last heartbeat plus a
-- lease): limits the cluster shares are divided by their number.
CREATE TABLE hub_instances (
    id         TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
