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

CREATE INDEX jobs_key_finished ON jobs (host_id, kind, COALESCE(repo_id, ''), finished_at DESC, id DESC);
