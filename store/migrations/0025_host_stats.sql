-- Issue 11 (the fleet pages' p95 at 10,000 hosts): each host's snapshot
-- count and repository size, kept in its `host_summary` row by triggers
-- in the same statement (so the same transaction) as every change to
-- what they are computed from, whoever writes it. A dashboard row and
-- the host page then read two stored columns instead of running
-- correlated subqueries per host over `snapshots` and `repo_health`.
--
-- The definitions (`rm_store::fleet::stats_drift` recomputes both from
-- the source rows; the tests compare the two):
-- - snapshot_count: the snapshots of the host's restic name
--   (`hosts.restic_host`) in the repositories it is attached to;
-- - repo_size: the sum over those repositories of each one's newest
--   known size (`COALESCE(raw_size, total_size)` of its newest
--   `repo_health` row that has one, newest by `ts`, then `id`); NULL
--   when none is known.
--
-- Snapshots are counted up and down one row at a time (an ingest adds,
-- a forget or a full listing removes); everything else recomputes the
-- touched hosts' values, which costs one index range per attached
-- repository.

ALTER TABLE host_summary ADD COLUMN snapshot_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE host_summary ADD COLUMN repo_size INTEGER;

-- A snapshot's hosts are found by their restic name, then checked for
-- the repository by the primary key of `host_repositories`.
CREATE INDEX hosts_restic_host ON hosts (restic_host) WHERE restic_host IS NOT NULL;

-- Backfill.
UPDATE host_summary SET
    snapshot_count = (SELECT COUNT(*) FROM host_repositories hr
                        JOIN hosts h ON h.id = hr.host_id
                        JOIN snapshots sn ON sn.repo_id = hr.repo_id AND sn.hostname = h.restic_host
                       WHERE hr.host_id = host_summary.host_id),
    repo_size = (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                              WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                              ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
                   FROM host_repositories hr WHERE hr.host_id = host_summary.host_id);

-- ------------------------------------------------------------- snapshots
CREATE TRIGGER host_stats_snapshot_insert AFTER INSERT ON snapshots
BEGIN
    UPDATE host_summary SET snapshot_count = snapshot_count + 1
    WHERE host_id IN (SELECT h.id FROM hosts h
                        JOIN host_repositories hr ON hr.host_id = h.id AND hr.repo_id = NEW.repo_id
                       WHERE h.restic_host = NEW.hostname);
END;

CREATE TRIGGER host_stats_snapshot_delete AFTER DELETE ON snapshots
BEGIN
    UPDATE host_summary SET snapshot_count = snapshot_count - 1
    WHERE host_id IN (SELECT h.id FROM hosts h
                        JOIN host_repositories hr ON hr.host_id = h.id AND hr.repo_id = OLD.repo_id
                       WHERE h.restic_host = OLD.hostname);
END;

CREATE TRIGGER host_stats_snapshot_update AFTER UPDATE OF repo_id, hostname ON snapshots
WHEN OLD.repo_id IS NOT NEW.repo_id OR OLD.hostname IS NOT NEW.hostname
BEGIN
    UPDATE host_summary SET snapshot_count = snapshot_count - 1
    WHERE host_id IN (SELECT h.id FROM hosts h
                        JOIN host_repositories hr ON hr.host_id = h.id AND hr.repo_id = OLD.repo_id
                       WHERE h.restic_host = OLD.hostname);
    UPDATE host_summary SET snapshot_count = snapshot_count + 1
    WHERE host_id IN (SELECT h.id FROM hosts h
                        JOIN host_repositories hr ON hr.host_id = h.id AND hr.repo_id = NEW.repo_id
                       WHERE h.restic_host = NEW.hostname);
END;

-- ----------------------------------------------------- host_repositories
-- Attaching or detaching a repository (also by the cascade of a host's
-- or a repository's delete) recomputes the host's two values from what
-- is left: rows already gone count nowhere, whatever the cascade order.
CREATE TRIGGER host_stats_attach AFTER INSERT ON host_repositories
BEGIN
    UPDATE host_summary SET
        snapshot_count = (SELECT COUNT(*) FROM host_repositories hr
                            JOIN hosts h ON h.id = hr.host_id
                            JOIN snapshots sn ON sn.repo_id = hr.repo_id AND sn.hostname = h.restic_host
                           WHERE hr.host_id = NEW.host_id),
        repo_size = (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                                  WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                                  ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
                       FROM host_repositories hr WHERE hr.host_id = NEW.host_id)
    WHERE host_id = NEW.host_id;
END;

CREATE TRIGGER host_stats_detach AFTER DELETE ON host_repositories
BEGIN
    UPDATE host_summary SET
        snapshot_count = (SELECT COUNT(*) FROM host_repositories hr
                            JOIN hosts h ON h.id = hr.host_id
                            JOIN snapshots sn ON sn.repo_id = hr.repo_id AND sn.hostname = h.restic_host
                           WHERE hr.host_id = OLD.host_id),
        repo_size = (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                                  WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                                  ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
                       FROM host_repositories hr WHERE hr.host_id = OLD.host_id)
    WHERE host_id = OLD.host_id;
END;

CREATE TRIGGER host_stats_reattach AFTER UPDATE OF host_id, repo_id ON host_repositories
WHEN OLD.host_id IS NOT NEW.host_id OR OLD.repo_id IS NOT NEW.repo_id
BEGIN
    UPDATE host_summary SET
        snapshot_count = (SELECT COUNT(*) FROM host_repositories hr
                            JOIN hosts h ON h.id = hr.host_id
                            JOIN snapshots sn ON sn.repo_id = hr.repo_id AND sn.hostname = h.restic_host
                           WHERE hr.host_id = host_summary.host_id),
        repo_size = (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                                  WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                                  ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
                       FROM host_repositories hr WHERE hr.host_id = host_summary.host_id)
    WHERE host_id IN (OLD.host_id, NEW.host_id);
END;

-- ----------------------------------------------------------------- hosts
-- A host's restic name set (at enrolment) or changed: its snapshots are
-- those of the new name.
CREATE TRIGGER host_stats_restic_host AFTER UPDATE OF restic_host ON hosts
WHEN OLD.restic_host IS NOT NEW.restic_host
BEGIN
    UPDATE host_summary SET
        snapshot_count = (SELECT COUNT(*) FROM host_repositories hr
                            JOIN snapshots sn ON sn.repo_id = hr.repo_id AND sn.hostname = NEW.restic_host
                           WHERE hr.host_id = NEW.id)
    WHERE host_id = NEW.id;
END;

-- ---------------------------------------------------------- host_summary
-- A summary row written after the host's repositories (an older
-- database's missing row, or a re-created one) starts from the truth.
CREATE TRIGGER host_stats_summary_insert AFTER INSERT ON host_summary
BEGIN
    UPDATE host_summary SET
        snapshot_count = (SELECT COUNT(*) FROM host_repositories hr
                            JOIN hosts h ON h.id = hr.host_id
                            JOIN snapshots sn ON sn.repo_id = hr.repo_id AND sn.hostname = h.restic_host
                           WHERE hr.host_id = NEW.host_id),
        repo_size = (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                                  WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                                  ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
                       FROM host_repositories hr WHERE hr.host_id = NEW.host_id)
    WHERE host_id = NEW.host_id;
END;

-- ----------------------------------------------------------- repo_health
-- A new, removed or changed measurement recomputes the size of every
-- host attached to the repository (`host_repositories_repo` index).
CREATE TRIGGER host_stats_health_insert AFTER INSERT ON repo_health
WHEN COALESCE(NEW.raw_size, NEW.total_size) IS NOT NULL
BEGIN
    UPDATE host_summary SET
        repo_size = (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                                  WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                                  ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
                       FROM host_repositories hr WHERE hr.host_id = host_summary.host_id)
    WHERE host_id IN (SELECT host_id FROM host_repositories WHERE repo_id = NEW.repo_id);
END;

CREATE TRIGGER host_stats_health_delete AFTER DELETE ON repo_health
WHEN COALESCE(OLD.raw_size, OLD.total_size) IS NOT NULL
BEGIN
    UPDATE host_summary SET
        repo_size = (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                                  WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                                  ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
                       FROM host_repositories hr WHERE hr.host_id = host_summary.host_id)
    WHERE host_id IN (SELECT host_id FROM host_repositories WHERE repo_id = OLD.repo_id);
END;

CREATE TRIGGER host_stats_health_update AFTER UPDATE OF repo_id, ts, raw_size, total_size ON repo_health
BEGIN
    UPDATE host_summary SET
        repo_size = (SELECT SUM((SELECT COALESCE(rh.raw_size, rh.total_size) FROM repo_health rh
                                  WHERE rh.repo_id = hr.repo_id AND COALESCE(rh.raw_size, rh.total_size) IS NOT NULL
                                  ORDER BY rh.ts DESC, rh.id DESC LIMIT 1))
                       FROM host_repositories hr WHERE hr.host_id = host_summary.host_id)
    WHERE host_id IN (SELECT host_id FROM host_repositories WHERE repo_id IN (OLD.repo_id, NEW.repo_id));
END;

-- ------------------------------------------------------- the text filter
-- The dashboard's text filter matches a substring of the name or the
-- hostname, which no B-tree can seek: its total is counted by scanning
-- this narrow index (about 40 bytes a host) instead of every host's
-- whole row (vitals and all).
CREATE INDEX hosts_text ON hosts (name, hostname, status);
