-- Repository exclusivity: the dispatcher claims a queued job's repository
-- (in one conditional UPDATE) before it sends the job to its agent. A
-- queued job with `claimed_at` set counts as active on its repository, so
-- a second dispatcher or an agent's scheduled prune/check/forget cannot
-- pass the "repository busy" check at the same time. Cleared when the job
-- leaves `queued` or the dispatch fails; all claims are cleared when the
-- control plane starts.
ALTER TABLE jobs ADD COLUMN claimed_at INTEGER;

-- Retention scope: restic's `--host` of a host's backups and forgets is
-- the host id (unique and stable; two cloned VMs share a hostname, never
-- an id). New hosts get it at enrollment. An existing host keeps its old
-- name only while no other host shares it (its earlier snapshots stay in
-- its retention scope); a shared or missing name becomes the host id.
UPDATE hosts SET restic_host = id
 WHERE restic_host IS NULL AND enrolled_at IS NOT NULL
    OR restic_host IN (SELECT restic_host FROM hosts WHERE restic_host IS NOT NULL
                       GROUP BY restic_host HAVING COUNT(*) > 1);
-- Schedules and queued jobs carry the name they were made with: follow.
UPDATE schedules SET params_json = json_set(params_json, '$.host_name',
       (SELECT h.restic_host FROM hosts h WHERE h.id = schedules.host_id))
 WHERE json_extract(params_json, '$.kind') IN ('backup', 'forget')
   AND (SELECT h.restic_host FROM hosts h WHERE h.id = schedules.host_id) IS NOT NULL;
UPDATE jobs SET params_json = json_set(params_json, '$.host_name',
       (SELECT h.restic_host FROM hosts h WHERE h.id = jobs.host_id))
 WHERE status = 'queued' AND json_extract(params_json, '$.kind') IN ('backup', 'forget')
   AND (SELECT h.restic_host FROM hosts h WHERE h.id = jobs.host_id) IS NOT NULL;
