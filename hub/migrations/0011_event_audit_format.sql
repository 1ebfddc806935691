-- The format of each event's audit record (raccordo_domain::audit). Empty
-- for format 1, the event's own columns; from format 2 the record also
-- carries the practice's service and a digest of its applicant, so the
-- chain vouches for who a practice belongs to. An event's record is
-- rebuilt in the format it was written in: older records verify as before.
ALTER TABLE events ADD COLUMN audit_format INTEGER;
