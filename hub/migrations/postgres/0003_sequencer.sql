-- Cursors and audit links are assigned after commit, by a sequencer, not by
-- the writing transaction (see hub/src/store/postgres/sequencer.rs). A writer
-- inserts its events with cursor NULL and its audit records with seq NULL,
-- and commits without waiting for any shared row; the sequencer, one at a
-- time across all instances (an advisory lock), gives the committed rows
-- their cursors and links them into their tenants' chains. Only committed
-- rows are visible to it and its runs are serialized, so a row committed
-- later gets a later cursor: a reader of "cursor > c" never skips one.

-- The order in which the sequencer takes rows of both tables: one sequence,
-- so events and audit records of a transaction keep their order.
CREATE SEQUENCE audit_order;

ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD COLUMN id BIGINT NOT NULL DEFAULT nextval('audit_order');
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id);
ALTER TABLE events ALTER COLUMN cursor DROP NOT NULL;
ALTER TABLE events ADD CONSTRAINT events_cursor UNIQUE (cursor);
CREATE INDEX events_unsequenced ON events (id) WHERE cursor IS NULL;

ALTER TABLE audit_log DROP CONSTRAINT audit_log_pkey;
ALTER TABLE audit_log ADD COLUMN id BIGINT NOT NULL DEFAULT nextval('audit_order');
ALTER TABLE audit_log ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);
ALTER TABLE audit_log ALTER COLUMN seq DROP NOT NULL;
ALTER TABLE audit_log ALTER COLUMN prev_hash DROP NOT NULL;
ALTER TABLE audit_log ALTER COLUMN hash DROP NOT NULL;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_seq UNIQUE (tenant_id, seq);
CREATE INDEX audit_log_unsequenced ON audit_log (id) WHERE seq IS NULL;

-- event_cursor and audit_heads are now written by the sequencer only.
