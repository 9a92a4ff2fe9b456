-- The alerts role's per-key reads (issue 14): the latest decisive result
-- of a (host, kind, repository) key and the newest successful backups of
-- a host to a repository. Through `jobs_host_status` both read every
-- finished job of the host and sorted them, once per key judged: a cost
-- that grew with each host's history (a year of hourly backups is 8,760
-- rows per judgement). This index hands them the newest rows of the key
-- in order, so each reads only the rows it returns.
--
-- The third column is the expression the queries compare
-- (`COALESCE(repo_id, '')`: `''` is "no repository"); SQLite uses an
-- index on an expression only where a query writes the same expression.
-- It holds finished jobs only (both queries write `finished_at IS NOT
-- NULL`), so creating a job does not write to it.

CREATE INDEX jobs_key_finished ON jobs (host_id, kind, COALESCE(repo_id, ''), finished_at DESC, id DESC)
    WHERE finished_at IS NOT NULL;

-- The alerts role's "which keys have new results" read (`results_since`)
-- over the cursor's window. With its time bound a bound parameter, SQLite
-- chose the status index and read every finished job ever stored, on
-- every pass (the query now writes `+status`/`+kind` to leave it the time
-- indexes). These two replace the plain time indexes with ones that also
-- hold what the read needs, so the window is read from the index alone
-- (the jobs side) or needs only the job's own row (the ingest side).
DROP INDEX jobs_finished;
CREATE INDEX jobs_finished ON jobs (finished_at, kind, status, host_id, repo_id);
DROP INDEX job_ingest_received;
CREATE INDEX job_ingest_received ON job_ingest (received_at, phase, job_id);
