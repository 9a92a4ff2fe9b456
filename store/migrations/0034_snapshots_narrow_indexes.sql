-- Issue 14 (stop 62): a job's result adds one entry to each of a
-- repository's snapshot indexes, at its host's place in the index, so
-- every result writes a leaf of each (and, every few bursts, splits it).
-- The snapshot id (64 characters) was the last column of both only to
-- order snapshots of the same time; without it an entry is about half
-- as long, a leaf holds twice as many and splits half as often, and the
-- interior pages a commit rewrites are fewer. Measured on a store with
-- 1.9 million snapshots: the two wrote 3.1 WAL pages a result against
-- 5.6 (docs/benchmarks.md, stop 62).
--
-- The pages' order is unchanged: newest first by time through the index,
-- and the rare snapshots of the same time ordered by id in a sort of
-- just those (the plan's "USE TEMP B-TREE FOR LAST TERM OF ORDER BY");
-- the cursor is still (time, snapshot_id). Counts by repository and host
-- still read the index alone.
DROP INDEX snapshots_repo_host_time_id;
CREATE INDEX snapshots_repo_host_time ON snapshots (repo_id, hostname, time DESC);
DROP INDEX snapshots_repo_time_id;
CREATE INDEX snapshots_repo_time ON snapshots (repo_id, time DESC);
