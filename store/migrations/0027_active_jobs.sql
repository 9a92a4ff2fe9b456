-- The jobs indexes only active jobs need (issue 14). The control plane
-- looks jobs up by status only to find active ones (queued, dispatched,
-- running): what a host may run next, what holds a repository, what is
-- overdue, how many run per host. As full indexes, `(exec_host_id,
-- status)`, `(host_id, status)` and `(repo_id, status)` held an entry for
-- every job ever stored and moved it when the job finished: each new job
-- and each result wrote a page of each, at a random place of a large
-- index. As partial indexes they hold the active jobs only, a few pages
-- that stay in the cache; a result only removes its entry.
--
-- SQLite uses a partial index only for a query that writes its WHERE term
-- itself (`status IN ('queued', 'dispatched', 'running')`, in this order):
-- every query that looks for active jobs carries that term, even where it
-- also names narrower statuses.
--
-- `jobs_repo_created` keeps a full index whose first column is `repo_id`:
-- deleting a repository sets `repo_id` to NULL on its jobs (a foreign key
-- action), which without one reads every job (deleting one repository of
-- a store of 1,000,000 jobs: 4.1 s with it, 75 s without). It also
-- serves the job list filtered by repository, newest first, without a
-- sort. `repo_id` never changes when a job finishes, so a result does not
-- touch it.

DROP INDEX jobs_exec_status;
CREATE INDEX jobs_exec_active ON jobs (exec_host_id, status, created_at, id)
    WHERE status IN ('queued', 'dispatched', 'running');
DROP INDEX jobs_host_status;
CREATE INDEX jobs_host_active ON jobs (host_id, status, created_at)
    WHERE status IN ('queued', 'dispatched', 'running');
DROP INDEX jobs_repo_status;
CREATE INDEX jobs_repo_active ON jobs (repo_id, status, created_at)
    WHERE status IN ('queued', 'dispatched', 'running');
CREATE INDEX jobs_repo_created ON jobs (repo_id, created_at DESC, id DESC);
