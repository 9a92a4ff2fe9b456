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
