-- What became of each result a receipt names: `applied`, `pending` (stored
-- in early_results, waiting for its attempt to end), or an anomaly class
-- (`late`, `contradictory`). A repeat of the result is answered the same way.
ALTER TABLE inbound_receipts ADD COLUMN outcome TEXT NOT NULL DEFAULT 'applied';
-- Results that arrived while the delivery they answer was in flight (the
-- vendor answered before the hub recorded its acknowledgement): applied, in
-- `id` order, by the transaction that records the end of that attempt, and
-- deleted by it. The reply is the mapped result, JSON.
CREATE TABLE early_results (
    id           BIGSERIAL PRIMARY KEY,
    operation_id TEXT NOT NULL REFERENCES jobs (operation_id),
    practice_id  TEXT NOT NULL REFERENCES practices (id),
    tenant_id    TEXT NOT NULL,
    adapter      TEXT NOT NULL,
    receipt      TEXT,
    reply        TEXT NOT NULL,
    received_at  BIGINT NOT NULL               -- Unix milliseconds
);
CREATE INDEX early_results_by_operation ON early_results (operation_id, id);
CREATE INDEX early_results_by_practice ON early_results (practice_id);
-- `raccordo status` counts each adapter's anomalies: a partial index, since
-- anomalies are rare and the events table is the largest.
CREATE INDEX events_anomalies ON events (actor, recorded_at) WHERE kind = 'anomaly';
