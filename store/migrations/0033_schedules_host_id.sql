-- The API's schedules list walks by (host, id) a page at a time
-- (`listing::schedules`, `GET /api/v1/schedules?cursor=`): with the index
-- on the host alone every page sorted each host's schedules in a temporary
-- B-tree. The same name, now on (host_id, id): every lookup by host is
-- served as before, and a page after a cursor is a seek and a walk.
DROP INDEX schedules_host;
CREATE INDEX schedules_host ON schedules (host_id, id);
