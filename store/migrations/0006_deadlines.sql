-- When the control plane, on its own clock, last saw a job become
-- dispatched or running. The deadline sweeper counts a job's timeout plus
-- its grace from here, never from an agent's clock.
ALTER TABLE jobs ADD COLUMN active_since INTEGER;
UPDATE jobs SET active_since = COALESCE(dispatched_at, created_at)
 WHERE status IN ('dispatched', 'running');
