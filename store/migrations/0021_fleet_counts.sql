-- Issue 11 (the fleet UI at 10,000 hosts): the dashboard's counters and
-- its tag filter's counts, kept current by triggers in the same statement
-- (so the same transaction) as every change to a host's status, its
-- summary (last backup result, running jobs) or its tags, whoever writes
-- it. The dashboard then reads six rows and one row per tag instead of
-- scanning every host and joining every tag on each request.
--
-- A host's health is the expression of `rm_store::fleet::HEALTH`
-- (`pending`, `offline`, `never`, `failed`, `warning`, `ok`); revoked
-- hosts count nowhere. `rm_store::fleet::recount` recomputes both tables
-- from the source rows (the tests compare the two).

CREATE TABLE fleet_counts (
    health  TEXT PRIMARY KEY,
    hosts   INTEGER NOT NULL DEFAULT 0,  -- non-revoked hosts in this health
    running INTEGER NOT NULL DEFAULT 0   -- of them, with a running job
) WITHOUT ROWID;

-- Non-revoked hosts carrying each tag; a tag no such host carries has no row.
CREATE TABLE tag_counts (
    tag   TEXT PRIMARY KEY,
    hosts INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO fleet_counts (health) VALUES ('ok'), ('warning'), ('failed'), ('offline'), ('never'), ('pending');

UPDATE fleet_counts SET
    hosts = (SELECT COUNT(*) FROM hosts h LEFT JOIN host_summary s ON s.host_id = h.id
             WHERE h.status != 'revoked' AND CASE
                WHEN h.status = 'pending' THEN 'pending'
                WHEN h.status = 'offline' THEN 'offline'
                WHEN s.last_backup_status IS NULL THEN 'never'
                WHEN s.last_backup_status IN ('failed', 'lost') THEN 'failed'
                WHEN s.last_backup_status IN ('warning', 'cancelled') THEN 'warning'
                ELSE 'ok' END = fleet_counts.health),
    running = (SELECT COUNT(*) FROM hosts h JOIN host_summary s ON s.host_id = h.id
             WHERE h.status != 'revoked' AND s.running_jobs > 0 AND CASE
                WHEN h.status = 'pending' THEN 'pending'
                WHEN h.status = 'offline' THEN 'offline'
                WHEN s.last_backup_status IS NULL THEN 'never'
                WHEN s.last_backup_status IN ('failed', 'lost') THEN 'failed'
                WHEN s.last_backup_status IN ('warning', 'cancelled') THEN 'warning'
                ELSE 'ok' END = fleet_counts.health);

INSERT INTO tag_counts (tag, hosts)
    SELECT t.tag, COUNT(*) FROM host_tags t JOIN hosts h ON h.id = t.host_id
    WHERE h.status != 'revoked' GROUP BY t.tag;

-- ---------------------------------------------------------------- hosts
-- A new host: counted in its health (its summary, if any, is read; a
-- new host has none yet, nor tags).
CREATE TRIGGER fleet_counts_host_insert AFTER INSERT ON hosts
WHEN NEW.status != 'revoked'
BEGIN
    UPDATE fleet_counts SET hosts = hosts + 1,
        running = running + COALESCE((SELECT running_jobs > 0 FROM host_summary WHERE host_id = NEW.id), 0)
    WHERE health = CASE
        WHEN NEW.status = 'pending' THEN 'pending'
        WHEN NEW.status = 'offline' THEN 'offline'
        ELSE COALESCE((SELECT CASE
            WHEN last_backup_status IS NULL THEN 'never'
            WHEN last_backup_status IN ('failed', 'lost') THEN 'failed'
            WHEN last_backup_status IN ('warning', 'cancelled') THEN 'warning'
            ELSE 'ok' END FROM host_summary WHERE host_id = NEW.id), 'never') END;
END;

-- A status change moves the host between healths; revoking (or
-- un-revoking) also takes its tags out of (or into) the tag counts.
CREATE TRIGGER fleet_counts_host_status AFTER UPDATE OF status ON hosts
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE fleet_counts SET hosts = hosts - 1,
        running = running - COALESCE((SELECT running_jobs > 0 FROM host_summary WHERE host_id = OLD.id), 0)
    WHERE OLD.status != 'revoked' AND health = CASE
        WHEN OLD.status = 'pending' THEN 'pending'
        WHEN OLD.status = 'offline' THEN 'offline'
        ELSE COALESCE((SELECT CASE
            WHEN last_backup_status IS NULL THEN 'never'
            WHEN last_backup_status IN ('failed', 'lost') THEN 'failed'
            WHEN last_backup_status IN ('warning', 'cancelled') THEN 'warning'
            ELSE 'ok' END FROM host_summary WHERE host_id = OLD.id), 'never') END;
    UPDATE fleet_counts SET hosts = hosts + 1,
        running = running + COALESCE((SELECT running_jobs > 0 FROM host_summary WHERE host_id = NEW.id), 0)
    WHERE NEW.status != 'revoked' AND health = CASE
        WHEN NEW.status = 'pending' THEN 'pending'
        WHEN NEW.status = 'offline' THEN 'offline'
        ELSE COALESCE((SELECT CASE
            WHEN last_backup_status IS NULL THEN 'never'
            WHEN last_backup_status IN ('failed', 'lost') THEN 'failed'
            WHEN last_backup_status IN ('warning', 'cancelled') THEN 'warning'
            ELSE 'ok' END FROM host_summary WHERE host_id = NEW.id), 'never') END;
    UPDATE tag_counts SET hosts = hosts - 1
    WHERE OLD.status != 'revoked' AND NEW.status = 'revoked'
      AND tag IN (SELECT tag FROM host_tags WHERE host_id = NEW.id);
    DELETE FROM tag_counts WHERE hosts <= 0
      AND OLD.status != 'revoked' AND NEW.status = 'revoked'
      AND tag IN (SELECT tag FROM host_tags WHERE host_id = NEW.id);
    INSERT INTO tag_counts (tag, hosts)
        SELECT tag, 1 FROM host_tags WHERE host_id = NEW.id
          AND OLD.status = 'revoked' AND NEW.status != 'revoked' AND true
    ON CONFLICT (tag) DO UPDATE SET hosts = hosts + 1;
END;

-- A deleted host leaves its health and its tags' counts, read before
-- the row goes: its summary and tags then go by cascade, and their own
-- triggers count only rows of a host that still exists. (If the delete
-- fails, the statement is undone with this trigger's changes.)
CREATE TRIGGER fleet_counts_host_delete BEFORE DELETE ON hosts
WHEN OLD.status != 'revoked'
BEGIN
    UPDATE fleet_counts SET hosts = hosts - 1,
        running = running - COALESCE((SELECT running_jobs > 0 FROM host_summary WHERE host_id = OLD.id), 0)
    WHERE health = CASE
        WHEN OLD.status = 'pending' THEN 'pending'
        WHEN OLD.status = 'offline' THEN 'offline'
        ELSE COALESCE((SELECT CASE
            WHEN last_backup_status IS NULL THEN 'never'
            WHEN last_backup_status IN ('failed', 'lost') THEN 'failed'
            WHEN last_backup_status IN ('warning', 'cancelled') THEN 'warning'
            ELSE 'ok' END FROM host_summary WHERE host_id = OLD.id), 'never') END;
    UPDATE tag_counts SET hosts = hosts - 1
    WHERE tag IN (SELECT tag FROM host_tags WHERE host_id = OLD.id);
    DELETE FROM tag_counts WHERE hosts <= 0
      AND tag IN (SELECT tag FROM host_tags WHERE host_id = OLD.id);
END;

-- ---------------------------------------------------------- host_summary
-- Only an online (or other non-pending, non-offline) host's health
-- depends on its summary; `running` counts for every non-revoked host.
CREATE TRIGGER fleet_counts_summary_insert AFTER INSERT ON host_summary
WHEN EXISTS (SELECT 1 FROM hosts WHERE id = NEW.host_id AND status != 'revoked')
BEGIN
    UPDATE fleet_counts SET hosts = hosts - 1
    WHERE health = (SELECT CASE WHEN status = 'pending' THEN 'pending'
                               WHEN status = 'offline' THEN 'offline' ELSE 'never' END
                    FROM hosts WHERE id = NEW.host_id);
    UPDATE fleet_counts SET hosts = hosts + 1, running = running + (NEW.running_jobs > 0)
    WHERE health = (SELECT CASE
        WHEN status = 'pending' THEN 'pending'
        WHEN status = 'offline' THEN 'offline'
        WHEN NEW.last_backup_status IS NULL THEN 'never'
        WHEN NEW.last_backup_status IN ('failed', 'lost') THEN 'failed'
        WHEN NEW.last_backup_status IN ('warning', 'cancelled') THEN 'warning'
        ELSE 'ok' END FROM hosts WHERE id = NEW.host_id);
END;

CREATE TRIGGER fleet_counts_summary_update AFTER UPDATE OF last_backup_status, running_jobs ON host_summary
WHEN (OLD.last_backup_status IS NOT NEW.last_backup_status OR (OLD.running_jobs > 0) != (NEW.running_jobs > 0))
  AND EXISTS (SELECT 1 FROM hosts WHERE id = NEW.host_id AND status != 'revoked')
BEGIN
    UPDATE fleet_counts SET hosts = hosts - 1, running = running - (OLD.running_jobs > 0)
    WHERE health = (SELECT CASE
        WHEN status = 'pending' THEN 'pending'
        WHEN status = 'offline' THEN 'offline'
        WHEN OLD.last_backup_status IS NULL THEN 'never'
        WHEN OLD.last_backup_status IN ('failed', 'lost') THEN 'failed'
        WHEN OLD.last_backup_status IN ('warning', 'cancelled') THEN 'warning'
        ELSE 'ok' END FROM hosts WHERE id = NEW.host_id);
    UPDATE fleet_counts SET hosts = hosts + 1, running = running + (NEW.running_jobs > 0)
    WHERE health = (SELECT CASE
        WHEN status = 'pending' THEN 'pending'
        WHEN status = 'offline' THEN 'offline'
        WHEN NEW.last_backup_status IS NULL THEN 'never'
        WHEN NEW.last_backup_status IN ('failed', 'lost') THEN 'failed'
        WHEN NEW.last_backup_status IN ('warning', 'cancelled') THEN 'warning'
        ELSE 'ok' END FROM hosts WHERE id = NEW.host_id);
END;

CREATE TRIGGER fleet_counts_summary_delete AFTER DELETE ON host_summary
WHEN EXISTS (SELECT 1 FROM hosts WHERE id = OLD.host_id AND status != 'revoked')
BEGIN
    UPDATE fleet_counts SET hosts = hosts - 1, running = running - (OLD.running_jobs > 0)
    WHERE health = (SELECT CASE
        WHEN status = 'pending' THEN 'pending'
        WHEN status = 'offline' THEN 'offline'
        WHEN OLD.last_backup_status IS NULL THEN 'never'
        WHEN OLD.last_backup_status IN ('failed', 'lost') THEN 'failed'
        WHEN OLD.last_backup_status IN ('warning', 'cancelled') THEN 'warning'
        ELSE 'ok' END FROM hosts WHERE id = OLD.host_id);
    UPDATE fleet_counts SET hosts = hosts + 1
    WHERE health = (SELECT CASE WHEN status = 'pending' THEN 'pending'
                               WHEN status = 'offline' THEN 'offline' ELSE 'never' END
                    FROM hosts WHERE id = OLD.host_id);
END;

-- ------------------------------------------------------------- host_tags
CREATE TRIGGER tag_counts_insert AFTER INSERT ON host_tags
WHEN EXISTS (SELECT 1 FROM hosts WHERE id = NEW.host_id AND status != 'revoked')
BEGIN
    INSERT INTO tag_counts (tag, hosts) VALUES (NEW.tag, 1)
    ON CONFLICT (tag) DO UPDATE SET hosts = hosts + 1;
END;

CREATE TRIGGER tag_counts_delete AFTER DELETE ON host_tags
WHEN EXISTS (SELECT 1 FROM hosts WHERE id = OLD.host_id AND status != 'revoked')
BEGIN
    UPDATE tag_counts SET hosts = hosts - 1 WHERE tag = OLD.tag;
    DELETE FROM tag_counts WHERE tag = OLD.tag AND hosts <= 0;
END;

CREATE TRIGGER tag_counts_update AFTER UPDATE ON host_tags
WHEN OLD.tag IS NOT NEW.tag OR OLD.host_id IS NOT NEW.host_id
BEGIN
    UPDATE tag_counts SET hosts = hosts - 1 WHERE tag = OLD.tag
      AND EXISTS (SELECT 1 FROM hosts WHERE id = OLD.host_id AND status != 'revoked');
    DELETE FROM tag_counts WHERE tag = OLD.tag AND hosts <= 0;
    INSERT INTO tag_counts (tag, hosts)
        SELECT NEW.tag, 1 WHERE EXISTS (SELECT 1 FROM hosts WHERE id = NEW.host_id AND status != 'revoked')
    ON CONFLICT (tag) DO UPDATE SET hosts = hosts + 1;
END;

-- ------------------------------------------------------------- snapshots
-- `GET /api/v1/snapshots?repo=` without a host pages a repository's
-- snapshots newest first by the cursor (time, snapshot_id): this index
-- serves that order without a sort.
CREATE INDEX snapshots_repo_time_id ON snapshots (repo_id, time DESC, snapshot_id DESC);

-- ------------------------------------------------------- the page's order
-- The dashboard's sorts walk an index of `host_summary` instead of
-- computing and sorting every host's health per request: each summary
-- row carries a copy of its host's status and name (kept by the triggers
-- below) and the health's rank in the "worst first" order as a generated
-- column (NULL for a revoked host, so the partial indexes leave it out).
-- Every host has a summary row (`hosts::insert` writes both); one missing
-- from an older database is added here.
ALTER TABLE host_summary ADD COLUMN host_status TEXT;
ALTER TABLE host_summary ADD COLUMN host_name TEXT;
ALTER TABLE host_summary ADD COLUMN health_rank INTEGER GENERATED ALWAYS AS (CASE
    WHEN host_status IS NULL OR host_status = 'revoked' THEN NULL
    WHEN host_status = 'pending' THEN 4
    WHEN host_status = 'offline' THEN 1
    WHEN last_backup_status IS NULL THEN 3
    WHEN last_backup_status IN ('failed', 'lost') THEN 0
    WHEN last_backup_status IN ('warning', 'cancelled') THEN 2
    ELSE 5 END) VIRTUAL;

INSERT INTO host_summary (host_id) SELECT id FROM hosts
    WHERE id NOT IN (SELECT host_id FROM host_summary);
UPDATE host_summary SET
    host_status = (SELECT status FROM hosts WHERE id = host_summary.host_id),
    host_name = (SELECT name FROM hosts WHERE id = host_summary.host_id);

CREATE INDEX host_summary_by_health ON host_summary (health_rank, host_name, host_id)
    WHERE health_rank IS NOT NULL;
CREATE INDEX host_summary_by_name ON host_summary (host_name, host_id)
    WHERE health_rank IS NOT NULL;
CREATE INDEX host_summary_by_last_backup
    ON host_summary (COALESCE(last_backup_at, 0), host_name, host_id)
    WHERE health_rank IS NOT NULL;

CREATE TRIGGER host_summary_copy_insert AFTER INSERT ON host_summary
BEGIN
    UPDATE host_summary SET
        host_status = (SELECT status FROM hosts WHERE id = NEW.host_id),
        host_name = (SELECT name FROM hosts WHERE id = NEW.host_id)
    WHERE host_id = NEW.host_id;
END;

CREATE TRIGGER host_summary_copy_host AFTER UPDATE OF status, name ON hosts
WHEN OLD.status IS NOT NEW.status OR OLD.name IS NOT NEW.name
BEGIN
    UPDATE host_summary SET host_status = NEW.status, host_name = NEW.name
    WHERE host_id = NEW.id;
END;
