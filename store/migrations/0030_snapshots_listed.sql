-- When a repository's snapshots were last listed in full (issue 14).
--
-- A backup's result adds its own snapshot to the cache, and the snapshot
-- count is the cache's count once a full listing was recorded. That count
-- used to be written as a health row per repository for every batch of
-- results: at fleet scale one new row and one leaf of `repo_health_repo_ts`
-- (at a random place of an index of every measurement ever taken) per
-- backup, and the repository's latest measurements, read from its newest
-- 200 health rows, lost their sizes and check behind a busy shared
-- repository's count rows. Now a full listing stamps the repository here,
-- and the count is read from the cache when it is shown.
ALTER TABLE repositories ADD COLUMN snapshots_listed_at INTEGER;

UPDATE repositories SET snapshots_listed_at =
    (SELECT MAX(ts) FROM repo_health
      WHERE repo_health.repo_id = repositories.id AND snapshot_count IS NOT NULL);
