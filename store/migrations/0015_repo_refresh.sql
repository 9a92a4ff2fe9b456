-- Repository refresh cadence (issue 14 item 6): when a full refresh
-- (snapshots, both stats modes, locks) was last queued per repository.
-- A repository without a row counts from its creation.
CREATE TABLE repo_refresh (
    repo_id   TEXT PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    queued_at INTEGER NOT NULL
);
