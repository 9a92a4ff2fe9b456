-- Issue 14 (stop 63): each repository's place in the refresh period.
-- A repository's periodic refresh (snapshots, both stats modes, locks)
-- falls due at its own phase of the period (`refresh_phase / 2^20` of
-- it), not a period after the last one: a fleet whose repositories were
-- added together (an import, an upgrade, a store seeded at once) had them
-- all fall due together, every period, and queued 19,000 refreshes and
-- 76,000 restic runs across a few minutes (docs/benchmarks.md, stop 62).
--
-- New repositories get a phase hashed from their id
-- (`rm_store::refresh::phase_of`). Existing ones get one from their rowid
-- by Fibonacci hashing (the rowid times 2^32 divided by the golden ratio,
-- modulo 2^32, its top 20 bits): consecutive rowids land far apart, so a
-- fleet added in order is spread evenly over the period.
ALTER TABLE repositories ADD COLUMN refresh_phase INTEGER NOT NULL DEFAULT 0
    CHECK (refresh_phase BETWEEN 0 AND 1048575);
UPDATE repositories SET refresh_phase = ((rowid % 1048576) * 2654435769) % 4294967296 / 4096;
