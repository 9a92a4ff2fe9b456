-- Protecting the control plane itself (issue 13).
--
-- The daily control-plane backup's repository (one row, written by the web
-- role from the settings page), each run of that backup (written by the
-- `serve` process's control-plane backup task) and each export of the
-- recovery kit (written by the web role, or by `restic-manager
-- recovery-kit` on the server's command line).

CREATE TABLE controlplane_backup_settings (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    repo_id           TEXT,                 -- NULL: not configured
    run_requested_at  INTEGER,              -- "Back up now" (ms)
    updated_at        INTEGER NOT NULL,
    updated_by        TEXT NOT NULL
);

CREATE TABLE controlplane_backups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    status          TEXT NOT NULL,          -- running | succeeded | failed
    repo_id         TEXT,
    job_id          TEXT,
    staging_dir     TEXT,
    files           INTEGER,
    bytes           INTEGER,
    schema_version  INTEGER,
    error           TEXT
);
CREATE INDEX controlplane_backups_by_start ON controlplane_backups (started_at);

CREATE TABLE recovery_kit_exports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    exported_at  INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    via          TEXT NOT NULL,             -- web | cli
    repo_id      TEXT
);
