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
    received_at          INTEGER NOT NULL,          -- Unix milliseconds
    legal_term_days      INTEGER NOT NULL,
    legal_deadline       INTEGER,
    concluded_at         INTEGER,
    last_sequence        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX practices_by_tenant    ON practices (tenant_id, id DESC);
CREATE INDEX practices_by_applicant ON practices (tenant_id, applicant_id, id DESC);
CREATE INDEX practices_by_service   ON practices (tenant_id, service_code, id DESC);
CREATE INDEX practices_by_status    ON practices (tenant_id, status, id DESC);

-- Attachments (role 'attachment') and outcome documents (role 'outcome').
CREATE TABLE documents (
    practice_id TEXT NOT NULL REFERENCES practices (id),
    tenant_id   TEXT NOT NULL,
    role        TEXT NOT NULL,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    content     BLOB NOT NULL,
    PRIMARY KEY (practice_id, role, position)
);

-- Protocol numbers, vendor ids, … (several per practice).
CREATE TABLE external_refs (
    practice_id TEXT NOT NULL REFERENCES practices (id),
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    system      TEXT NOT NULL,
    issued_at   INTEGER,
    PRIMARY KEY (practice_id, kind, value)
);
CREATE INDEX external_refs_lookup ON external_refs (tenant_id, kind, value);

-- Every change of every practice; append-only.
CREATE TABLE events (
    cursor        INTEGER PRIMARY KEY AUTOINCREMENT,
    practice_id   TEXT NOT NULL REFERENCES practices (id),
    tenant_id     TEXT NOT NULL,
    service_code  TEXT NOT NULL,
    applicant_id  TEXT NOT NULL,
    sequence      INTEGER NOT NULL,
    occurred_at   INTEGER NOT NULL,
    recorded_at   INTEGER NOT NULL,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    from_status   TEXT,
    to_status     TEXT,
    from_delivery TEXT,
    to_delivery   TEXT,
    reason        TEXT,
    vendor_code   TEXT,
    actor         TEXT NOT NULL,
    UNIQUE (practice_id, sequence)
);
CREATE INDEX events_by_tenant ON events (tenant_id, cursor);

-- The transactional outbox: one row per delivery (operation id = primary key,
-- stable across attempts).
CREATE TABLE jobs (
    operation_id    TEXT PRIMARY KEY,
    practice_id     TEXT NOT NULL REFERENCES practices (id),
    tenant_id       TEXT NOT NULL,
    adapter         TEXT NOT NULL,
    operation       TEXT NOT NULL,                  -- submit | withdraw
    state           TEXT NOT NULL,                  -- due | in_flight | done | dead | cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    failure_class   TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (adapter, state, next_attempt_at);
CREATE INDEX jobs_by_practice ON jobs (practice_id);
