-- An event is inserted without its cursor and given one by the sequencer
-- right after its commit. Indexes on the cursor held an entry for every
-- such NULL, all of them at the same end of the index: every writer's
-- insert touched that one leaf page, and the sequencer's update (a new row
-- version) added the real entry anyway. Readers only ever ask for events
-- that have a cursor ("cursor > c" implies it is not NULL), so both indexes
-- now hold sequenced events only: an insert writes three index entries, not
-- five.

ALTER TABLE events DROP CONSTRAINT events_cursor;
CREATE UNIQUE INDEX events_cursor ON events (cursor) WHERE cursor IS NOT NULL;

DROP INDEX events_by_tenant;
CREATE INDEX events_by_tenant ON events (tenant_id, cursor) WHERE cursor IS NOT NULL;
