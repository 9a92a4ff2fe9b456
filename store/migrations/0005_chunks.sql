-- Parts of a job result too large for one bus message (a `done` summary
-- sent as numbered chunks before the `done` that names their total).
-- Kept until the `done` reassembles them; go with their job.
CREATE TABLE job_parts (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    of          TEXT NOT NULL,                 -- what the parts make up: 'summary'
    idx         INTEGER NOT NULL,              -- 0-based
    total       INTEGER NOT NULL,
    data        TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, of, idx)
);
