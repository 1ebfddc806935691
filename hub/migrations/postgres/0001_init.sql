-- The PostgreSQL store: the same logical schema as SQLite's migrations
-- 0001-0009, with PostgreSQL types. Timestamps stay BIGINT Unix
-- milliseconds, as in SQLite, so both backends map rows the same way.

-- Practices: one row per submission, with its current state.
CREATE TABLE practices (
    id                   TEXT PRIMARY KEY,          -- UUIDv7: sorts by submission time
    tenant_id            TEXT NOT NULL,             -- ISTAT code
    service_code         TEXT NOT NULL,
    applicant_id         TEXT NOT NULL,             -- fiscal code or VAT number
    idempotency_key      TEXT NOT NULL,
    content_hash         TEXT NOT NULL,
    content              TEXT NOT NULL,             -- JSON: applicant, submitter, channel, data
    status               TEXT NOT NULL,
    mode                 TEXT NOT NULL,
    delivery_status      TEXT,
    current_operation_id TEXT,
    outcome_status       TEXT,
    outcome_reason       TEXT,
    outcome_vendor_code  TEXT,
    received_at          BIGINT NOT NULL,           -- Unix milliseconds
    legal_term_days      BIGINT NOT NULL,
    legal_deadline       BIGINT,
    concluded_at         BIGINT,
    last_sequence        BIGINT NOT NULL DEFAULT 0,
    -- A concurrent duplicate submission (another instance, same key) fails
    -- here and is answered with the practice that won.
    CONSTRAINT practices_idempotency UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX practices_by_tenant    ON practices (tenant_id, id);
CREATE INDEX practices_by_applicant ON practices (tenant_id, applicant_id, id);
CREATE INDEX practices_by_service   ON practices (tenant_id, service_code, id);
CREATE INDEX practices_by_status    ON practices (tenant_id, status, id);

-- Attachments (role 'attachment') and outcome documents (role 'outcome').
CREATE TABLE documents (
    practice_id TEXT NOT NULL REFERENCES practices (id),
    tenant_id   TEXT NOT NULL,
    role        TEXT NOT NULL,
    position    BIGINT NOT NULL,
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    content     BYTEA NOT NULL,
    PRIMARY KEY (practice_id, role, position)
);

-- Protocol numbers, vendor ids, … (several per practice).
CREATE TABLE external_refs (
    practice_id TEXT NOT NULL REFERENCES practices (id),
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    system      TEXT NOT NULL,
    issued_at   BIGINT,
    PRIMARY KEY (practice_id, kind, value)
);
-- A vendor's result correlated by its own reference is looked up within the
-- references the receiving adapter recorded (system).
CREATE INDEX external_refs_by_system ON external_refs (system, kind, value);

-- Every change of every practice; append-only. The cursor is handed out by
-- event_cursor below, not by a sequence: see there.
CREATE TABLE events (
    cursor          BIGINT PRIMARY KEY,
    practice_id     TEXT NOT NULL REFERENCES practices (id),
    tenant_id       TEXT NOT NULL,
    service_code    TEXT NOT NULL,
    applicant_id    TEXT NOT NULL,
    sequence        BIGINT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    recorded_at     BIGINT NOT NULL,
    source          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    from_status     TEXT,
    to_status       TEXT,
    from_delivery   TEXT,
    to_delivery     TEXT,
    reason          TEXT,
    vendor_code     TEXT,
    actor           TEXT NOT NULL,
    -- Each event is its own audit record: its place in the tenant's chain.
    audit_seq       BIGINT,
    audit_prev_hash TEXT,
    audit_hash      TEXT,
    UNIQUE (practice_id, sequence)
);
CREATE INDEX events_by_tenant ON events (tenant_id, cursor);

-- The last event cursor handed out. Sequence values become visible out of
-- commit order (a transaction that took 11 may commit after one that took
-- 12), and a watcher reading "cursor > 11" would skip the late one. The
-- transaction that appends events takes its range from this one row, just
-- before it commits: the row lock serializes event-writing commits, so
-- cursor order is commit order.
CREATE TABLE event_cursor (
    one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last BIGINT NOT NULL
);
INSERT INTO event_cursor (one, last) VALUES (TRUE, 0);

-- The transactional outbox: one row per delivery (operation id = primary key,
-- stable across attempts).
CREATE TABLE jobs (
    operation_id       TEXT PRIMARY KEY,
    practice_id        TEXT NOT NULL REFERENCES practices (id),
    tenant_id          TEXT NOT NULL,
    adapter            TEXT NOT NULL,
    operation          TEXT NOT NULL,               -- submit | withdraw
    state              TEXT NOT NULL,               -- due | in_flight | polling | poll_in_flight | done | dead | cancelled
    attempts           BIGINT NOT NULL DEFAULT 0,
    max_attempts       BIGINT NOT NULL,
    next_attempt_at    BIGINT NOT NULL,
    last_error         TEXT,
    failure_class      TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    follow_up          TEXT,                        -- opaque to the hub (a status URL)
    follow_up_polls    BIGINT NOT NULL DEFAULT 0,
    follow_up_deadline BIGINT,                      -- Unix milliseconds
    traceparent        TEXT,
    -- Who runs a job in flight (a hub instance's id) and until when its
    -- claim holds without renewal; NULL when the job is not in flight.
    lease_owner        TEXT,
    lease_expires_at   BIGINT
);
CREATE INDEX jobs_due ON jobs (adapter, state, next_attempt_at);
CREATE INDEX jobs_by_practice ON jobs (practice_id);
CREATE INDEX jobs_by_lease ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX jobs_dead ON jobs (updated_at) WHERE state = 'dead';

-- Results that arrived through an inbound channel, keyed by what makes each
-- distinct: a redelivered result finds its receipt here and changes nothing.
CREATE TABLE inbound_receipts (
    adapter     TEXT NOT NULL,
    receipt     TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    practice_id TEXT NOT NULL REFERENCES practices (id),
    received_at BIGINT NOT NULL,
    PRIMARY KEY (adapter, receipt)
);
CREATE INDEX inbound_receipts_by_practice ON inbound_receipts (practice_id);

-- The audit trail besides events: refused calls, purges, records of purged
-- events; per tenant, each record carrying the hash of the one before it.
CREATE TABLE audit_log (
    tenant_id   TEXT NOT NULL,                  -- ISTAT code, or '-' for calls naming no tenant
    seq         BIGINT NOT NULL,                -- 1, 2, … within the tenant
    recorded_at BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    practice_id TEXT,
    detail      TEXT NOT NULL,                  -- JSON, hashed as stored
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_by_time ON audit_log (tenant_id, recorded_at);

-- The newest record of each chain. A writer locks its tenant's row before
-- linking records, so concurrent writers (several instances) extend one
-- chain instead of forking it.
CREATE TABLE audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL
);
