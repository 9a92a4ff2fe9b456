-- Issue 11 (the fleet UI at scale): the restore wizard pages a host's
-- snapshots newest first with a (time, snapshot_id) cursor. This index
-- serves that order without a sort, and its prefix serves every query the
-- (repo_id, hostname, time) index served, so that one goes.
CREATE INDEX snapshots_repo_host_time_id ON snapshots (repo_id, hostname, time DESC, snapshot_id DESC);
DROP INDEX snapshots_repo_host_time;
