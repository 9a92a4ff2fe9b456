-- restic-manager schema, version 1. Documented in docs/schema.md.
-- Times are INTEGER Unix milliseconds (UTC). JSON columns hold the bus
-- message types of rm-bus. Secret columns (*_enc) are AEAD ciphertexts
-- (rm-controlplane::secrets), never cleartext.

-- ------------------------------------------------------------------ hosts
CREATE TABLE hosts (
    id                      TEXT PRIMARY KEY,            -- HostId, subject-safe
    name                    TEXT NOT NULL UNIQUE,        -- operator's display name
    status                  TEXT NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'online', 'offline', 'revoked')),
    restic_host             TEXT,                        -- restic --host name (the endpoint's hostname)
    nkey                    TEXT UNIQUE,                 -- agent user public key
    xkey                    TEXT,                        -- agent public xkey (secrets are sealed to it)
    created_at              INTEGER NOT NULL,
    created_by              TEXT NOT NULL,
    enrolled_at             INTEGER,
    revoked_at              INTEGER,
    last_seen_at            INTEGER,
    status_changed_at       INTEGER,
    agent_version           TEXT,
    restic_version          TEXT,
    os                      TEXT,
    arch                    TEXT,
    hostname                TEXT,
    uptime_secs             INTEGER,
    vitals_json             TEXT,                        -- disks, running jobs, next runs
    config_version          INTEGER NOT NULL DEFAULT 0,  -- desired
    applied_config_version  INTEGER NOT NULL DEFAULT 0   -- confirmed by the agent
);
CREATE INDEX hosts_status ON hosts (status, last_seen_at);

-- One-time enrollment tokens: only a SHA-256 of the token is stored.
CREATE TABLE enrollment_tokens (
    token_hash  TEXT PRIMARY KEY,
    host_id     TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX enrollment_tokens_host ON enrollment_tokens (host_id);

-- Kept current by every job transition so the dashboard never scans jobs.
CREATE TABLE host_summary (
    host_id                 TEXT PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    last_job_id             TEXT,
    last_job_kind           TEXT,
    last_job_status         TEXT,
    last_job_finished_at    INTEGER,
    last_backup_status      TEXT,
    last_backup_at          INTEGER,
    last_backup_success_at  INTEGER,
    last_snapshot_id        TEXT,
    running_jobs            INTEGER NOT NULL DEFAULT 0,
    queued_jobs             INTEGER NOT NULL DEFAULT 0,
    failed_jobs_total       INTEGER NOT NULL DEFAULT 0
);

-- ------------------------------------------------------------------ repositories
CREATE TABLE repositories (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    url_display          TEXT NOT NULL,                 -- URL with any credentials removed
    secrets_enc          BLOB NOT NULL,                 -- {repository, password, env} with full access
    maintenance_host_id  TEXT REFERENCES hosts (id) ON DELETE SET NULL,
    restic_repo_id       TEXT,                          -- from `restic cat config`
    status               TEXT NOT NULL DEFAULT 'unverified'
                         CHECK (status IN ('unverified', 'ok', 'error')),
    status_detail        TEXT,
    created_at           INTEGER NOT NULL,
    created_by           TEXT NOT NULL
);

-- A host's credential for a repository.
CREATE TABLE host_repositories (
    host_id      TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    repo_id      TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    access       TEXT NOT NULL CHECK (access IN ('append_only', 'full')),
    secrets_enc  BLOB NOT NULL,                         -- {repository, password, env} for this host
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (host_id, repo_id)
);
CREATE INDEX host_repositories_repo ON host_repositories (repo_id);

-- ------------------------------------------------------------------ schedules
CREATE TABLE schedules (
    id              TEXT PRIMARY KEY,
    host_id         TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    repo_id         TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('backup', 'forget', 'prune', 'check')),
    cron            TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    params_json     TEXT NOT NULL,                      -- rm_bus::msg::JobParams (retention inside forget)
    enabled         INTEGER NOT NULL DEFAULT 1,
    jitter_secs     INTEGER NOT NULL DEFAULT 0,
    timeout_secs    INTEGER NOT NULL,
    grace_secs      INTEGER NOT NULL DEFAULT 3600,      -- for the stale-schedule rule
    exec_host_id    TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,  -- where it runs (maintenance host for forget/prune on append-only)
    config_version  INTEGER NOT NULL,                   -- host config version that last changed it
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX schedules_host ON schedules (host_id);
CREATE INDEX schedules_exec_host ON schedules (exec_host_id);

-- ------------------------------------------------------------------ jobs
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,                  -- JobId
    host_id          TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,  -- whose job it is
    exec_host_id     TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,  -- where restic runs
    repo_id          TEXT REFERENCES repositories (id) ON DELETE SET NULL,
    kind             TEXT NOT NULL,
    params_json      TEXT NOT NULL,
    origin           TEXT NOT NULL CHECK (origin IN ('operator', 'schedule', 'system')),
    schedule_id      TEXT REFERENCES schedules (id) ON DELETE SET NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'dispatched', 'running', 'succeeded',
                                       'warning', 'failed', 'cancelled', 'lost')),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    timeout_secs     INTEGER NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    dispatched_at    INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    exit_code        INTEGER,
    error_kind       TEXT,
    error            TEXT,
    summary_json     TEXT,
    stderr_tail      TEXT,
    restic_version   TEXT,
    log_lines        INTEGER NOT NULL DEFAULT 0,
    log_truncated    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_host_created ON jobs (host_id, created_at DESC);
CREATE INDEX jobs_exec_status ON jobs (exec_host_id, status);
CREATE INDEX jobs_host_status ON jobs (host_id, status);
CREATE INDEX jobs_repo_status ON jobs (repo_id, status);
CREATE INDEX jobs_status_created ON jobs (status, created_at DESC);
CREATE INDEX jobs_created ON jobs (created_at DESC);
CREATE INDEX jobs_schedule ON jobs (schedule_id, finished_at DESC);
CREATE INDEX jobs_finished ON jobs (finished_at);

-- Idempotent ingest: one row per (job, phase) received from an agent.
CREATE TABLE job_ingest (
    job_id       TEXT NOT NULL,
    phase        TEXT NOT NULL CHECK (phase IN ('started', 'done')),
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (job_id, phase)
);

CREATE TABLE job_logs (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    ts      INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    text    TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- ------------------------------------------------------------------ repository state
CREATE TABLE snapshots (
    repo_id       TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    snapshot_id   TEXT NOT NULL,                        -- full id (64 hex) or short id from 0.14 backup
    short_id      TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    time          INTEGER NOT NULL,
    paths_json    TEXT NOT NULL,
    tags_json     TEXT NOT NULL DEFAULT '[]',
    summary_json  TEXT,
    seen_at       INTEGER NOT NULL,
    PRIMARY KEY (repo_id, snapshot_id)
);
CREATE INDEX snapshots_repo_host_time ON snapshots (repo_id, hostname, time DESC);

CREATE TABLE repo_health (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id            TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    ts                 INTEGER NOT NULL,
    source_job_id      TEXT,
    total_size         INTEGER,                        -- restore-size mode
    raw_size           INTEGER,                        -- raw-data mode
    uncompressed_size  INTEGER,
    dedup_ratio        REAL,
    compression_ratio  REAL,
    snapshot_count     INTEGER,
    lock_count         INTEGER,
    check_ok           INTEGER,
    check_at           INTEGER,
    detail_json        TEXT
);
CREATE INDEX repo_health_repo_ts ON repo_health (repo_id, ts DESC);

-- ------------------------------------------------------------------ alerts (owned by the alerts role)
CREATE TABLE alerts (
    id               TEXT PRIMARY KEY,
    host_id          TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    subject          TEXT NOT NULL DEFAULT '',           -- '' = no subject (never NULL: dedup)
    severity         TEXT NOT NULL,
    message          TEXT NOT NULL,
    job_id           TEXT,
    raised_at        INTEGER NOT NULL,
    last_seen_at     INTEGER NOT NULL,
    acknowledged_at  INTEGER,
    acknowledged_by  TEXT,
    resolved_at      INTEGER,
    resolved_by      TEXT,
    notified         INTEGER NOT NULL DEFAULT 1          -- 0 while the host was muted
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (host_id, kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_open ON alerts (resolved_at, raised_at DESC);
CREATE INDEX alerts_host ON alerts (host_id, raised_at DESC);

CREATE TABLE host_mutes (
    host_id     TEXT PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    until       INTEGER NOT NULL,
    reason      TEXT,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE notification_channels (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('ntfy', 'webhook')),
    enabled      INTEGER NOT NULL DEFAULT 1,
    config_json  TEXT NOT NULL,                          -- non-secret settings
    secrets_enc  BLOB,                                   -- tokens, passwords, webhook secret
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE delivery_outbox (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL,                      -- stable across retries
    alert_id         TEXT REFERENCES alerts (id) ON DELETE CASCADE,
    channel_id       TEXT NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    event            TEXT NOT NULL,                      -- raised | acknowledged | resolved | test
    payload_json     TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX delivery_outbox_due ON delivery_outbox (state, next_attempt_at);

CREATE TABLE delivery_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id    TEXT NOT NULL REFERENCES delivery_outbox (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    ts           INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    status_code  INTEGER,
    latency_ms   INTEGER,
    error        TEXT
);
CREATE INDEX delivery_log_outbox ON delivery_log (outbox_id, attempt);

-- Saved positions of background workers (e.g. the alerts cursor).
CREATE TABLE worker_state (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- ------------------------------------------------------------------ operators (owned by the web role)
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,                        -- argon2id PHC string
    role           TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,                      -- SHA-256 of the cookie value
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

-- ------------------------------------------------------------------ audit (every role appends)
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    ts           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    via          TEXT NOT NULL,
    role         TEXT NOT NULL,                          -- which process wrote it
    action       TEXT NOT NULL,
    target_kind  TEXT,
    target_id    TEXT,
    detail_json  TEXT
);
CREATE INDEX audit_log_ts ON audit_log (ts DESC);
CREATE INDEX audit_log_target ON audit_log (target_kind, target_id, ts DESC);
