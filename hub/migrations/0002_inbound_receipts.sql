-- Results that arrived through an inbound channel (callback, reply message,
-- result file row), keyed by what makes each distinct: a redelivered or
-- re-sent result finds its receipt here and changes nothing.
CREATE TABLE inbound_receipts (
    adapter     TEXT NOT NULL,
    receipt     TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    practice_id TEXT NOT NULL REFERENCES practices (id),
    received_at INTEGER NOT NULL,               -- Unix milliseconds
    PRIMARY KEY (adapter, receipt)
);
