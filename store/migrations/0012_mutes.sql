-- restic-manager schema, version 12: mute windows with their history and
-- recurring maintenance windows (owned by the alerts role). Documented in
-- docs/schema.md.

-- One-off mutes, kept after they end so the compliance strip can mark the
-- days they covered. Setting a new mute ends the current one; clearing a
-- mute sets `until` to the time it was cleared.
CREATE TABLE mute_windows (
    id          TEXT PRIMARY KEY,
    host_id     TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    starts_at   INTEGER NOT NULL,
    until       INTEGER NOT NULL,
    reason      TEXT,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    ended_by    TEXT                                    -- who cleared it early
);
CREATE INDEX mute_windows_host ON mute_windows (host_id, until);

INSERT INTO mute_windows (id, host_id, starts_at, until, reason, created_by, created_at)
    SELECT 'm' || host_id, host_id, created_at, until, reason, created_by, created_at FROM host_mutes;
DROP TABLE host_mutes;

-- Recurring maintenance windows: from every slot of `cron` (in `timezone`)
-- for `duration_secs` the host's alerts are muted the same way.
CREATE TABLE maintenance_windows (
    id             TEXT PRIMARY KEY,
    host_id        TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    cron           TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    duration_secs  INTEGER NOT NULL CHECK (duration_secs > 0),
    reason         TEXT,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE INDEX maintenance_windows_host ON maintenance_windows (host_id);
