-- The audit trail: every change of every practice (mirrored from events in
-- the same transaction) and every refused call, per tenant, each record
-- carrying the hash of the one before it. Removing or editing a record
-- breaks the chain at that record (`raccordo audit verify`).
CREATE TABLE audit_log (
    tenant_id   TEXT NOT NULL,                  -- ISTAT code, or '-' for calls naming no tenant
    seq         INTEGER NOT NULL,               -- 1, 2, … within the tenant
    recorded_at INTEGER NOT NULL,               -- Unix milliseconds
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    practice_id TEXT,
    detail      TEXT NOT NULL,                  -- JSON, hashed as stored
    prev_hash   TEXT NOT NULL,                  -- hex SHA-256; 64 zeros for the first record
    hash        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_by_time ON audit_log (tenant_id, recorded_at);

-- The newest record of each chain, written with it: removing the last
-- records of a chain (which leaves the rest consistent) shows as a head
-- that no longer matches.
CREATE TABLE audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      TEXT NOT NULL
);
