-- The format of each event's audit record, as SQLite's migration 0011:
-- empty for format 1 (the event's own columns); from format 2 the record
-- also carries the practice's service and a digest of its applicant. Set
-- by the sequencer that links the record: an instance of the previous
-- version, running beside newer ones during a rolling upgrade, links in
-- format 1 and leaves it empty, and its records still verify.
ALTER TABLE events ADD COLUMN audit_format BIGINT;
