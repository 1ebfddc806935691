-- Listings (newest first) read these indexes backwards just as fast as
-- forwards. Declared descending, every new practice was inserted at the
-- start of its group, in the middle of the B-tree, which leaves pages half
-- full: twice the pages, and more of them rewritten by each commit.
-- Ascending, a new practice is appended at the end of its group.
-- (practices_by_applicant stays: a citizen's practices are scattered anyway.)
DROP INDEX practices_by_tenant;
DROP INDEX practices_by_service;
DROP INDEX practices_by_status;
CREATE INDEX practices_by_tenant  ON practices (tenant_id, id);
CREATE INDEX practices_by_service ON practices (tenant_id, service_code, id);
CREATE INDEX practices_by_status  ON practices (tenant_id, status, id);
