-- When the control plane, on its own clock, last saw a job become
-- dispatched or running. The deadline sweeper counts a job's timeout plus
-- its grace from here, never from an agent's clock.
ALTER TABLE jobs ADD COLUMN active_since INTEGER;
UPDATE jobs SET active_since = COALESCE(dispatched_at, created_at)
 WHERE status IN ('dispatched', 'running');

-- A dispatch the agent refused for a reason that may pass (shutting down,
-- outbox full, disk) leaves the job queued: not sent again before
-- `not_before` (control-plane clock), the wait doubling with `refusals`.
ALTER TABLE jobs ADD COLUMN not_before INTEGER;
ALTER TABLE jobs ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;

-- Results (job started/done/part) the control plane refused: kept here so
-- an operator sees them, not only the agent's `rejected/` directory. One
-- row per (host, job, phase); a re-send updates it.
CREATE TABLE rejected_results (
    host_id     TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    phase       TEXT NOT NULL,                 -- 'started' | 'done' | 'part'
    reason      TEXT NOT NULL,
    excerpt     TEXT NOT NULL,                 -- the message's start (at most 4 KiB)
    received_at INTEGER NOT NULL,
    times       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (host_id, job_id, phase)
);
CREATE INDEX rejected_results_received ON rejected_results (received_at DESC);
