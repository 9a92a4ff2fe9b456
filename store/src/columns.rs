//! The columns each row type reads, named once per table: store queries
//! list them (`concat!("SELECT ", job_columns!(), " FROM jobs ...")`)
//! and never use `SELECT *` or `RETURNING *`. A statement prepared with
//! `*` changes shape when another process's migration adds a column to
//! the table: SQLite re-prepares it with one column more than sqlx-sqlite
//! cached for it, and reading the row then panics (index out of bounds).
//! A named list keeps its shape across such a change.
//!
//! Each list is the fields of the row type, in order; a test checks every
//! list against the table.

/// The columns of a `snapshots` row.
macro_rules! snapshot_columns {
    () => {
        "repo_id, snapshot_id, short_id, hostname, time, paths_json, tags_json, summary_json, seen_at"
    };
}

/// The columns of a `repo_health` row.
macro_rules! health_columns {
    () => {
        "id, repo_id, ts, source_job_id, total_size, raw_size, uncompressed_size, dedup_ratio, compression_ratio, snapshot_count, lock_count, check_ok, check_at, detail_json"
    };
}

/// The columns of a `jobs` row.
macro_rules! job_columns {
    () => {
        "id, host_id, exec_host_id, repo_id, kind, params_json, origin, schedule_id, status, cancel_requested, timeout_secs, created_by, created_at, dispatched_at, started_at, finished_at, exit_code, error_kind, error, summary_json, stderr_tail, restic_version, log_lines, log_truncated"
    };
}

/// The columns of a `job_logs` row.
macro_rules! log_line_columns {
    () => {
        "job_id, seq, ts, stream, text"
    };
}

/// The columns of a `alerts` row.
macro_rules! alert_columns {
    () => {
        "id, host_id, kind, subject, severity, message, job_id, raised_at, last_seen_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by, notified, cause"
    };
}

/// The columns of a `notification_channels` row.
macro_rules! channel_columns {
    () => {
        "id, name, kind, enabled, config_json, secrets_enc, created_at, updated_at"
    };
}

/// The columns of a `mute_windows` row.
macro_rules! mute_window_columns {
    () => {
        "id, host_id, starts_at, until, reason, created_by, created_at, ended_by"
    };
}

/// The columns of a `maintenance_windows` row.
macro_rules! maintenance_window_columns {
    () => {
        "id, host_id, cron, timezone, duration_secs, reason, created_by, created_at"
    };
}

/// The columns of a `audit_log` row.
macro_rules! audit_entry_columns {
    () => {
        "id, ts, actor, via, role, action, target_kind, target_id, detail_json, address"
    };
}

/// The columns of a `rejected_results` row.
macro_rules! rejected_columns {
    () => {
        "host_id, job_id, phase, reason, excerpt, received_at, times"
    };
}

/// The columns of a `controlplane_backups` row.
macro_rules! cp_backup_run_columns {
    () => {
        "id, started_at, finished_at, status, repo_id, job_id, staging_dir, files, bytes, schema_version, error"
    };
}

/// The columns of a `recovery_kit_exports` row.
macro_rules! kit_export_columns {
    () => {
        "id, exported_at, actor, via, repo_id"
    };
}

/// The columns of a `delivery_outbox` row.
macro_rules! delivery_columns {
    () => {
        "id, webhook_id, alert_id, channel_id, event, payload_json, state, attempts, next_attempt_at, last_error, created_at, finished_at"
    };
}

/// The columns of a `delivery_log` row.
macro_rules! delivery_log_columns {
    () => {
        "id, outbox_id, attempt, ts, outcome, status_code, latency_ms, error"
    };
}

/// The columns of a `repositories` row.
macro_rules! repo_columns {
    () => {
        "id, name, url_display, secrets_enc, maintenance_host_id, restic_repo_id, status, status_detail, created_at, created_by"
    };
}

/// The columns of a `host_repositories` row.
macro_rules! host_repo_columns {
    () => {
        "host_id, repo_id, access, secrets_enc, created_at"
    };
}

/// The columns of a `schedules` row.
macro_rules! schedule_columns {
    () => {
        "id, host_id, repo_id, kind, cron, timezone, params_json, enabled, jitter_secs, timeout_secs, grace_secs, exec_host_id, config_version, created_at, updated_at"
    };
}

/// The columns of a `login_throttle` row.
macro_rules! throttle_columns {
    () => {
        "key, failures, last_failure_at, blocked_until"
    };
}

/// The columns of a `hosts` row.
macro_rules! host_columns {
    () => {
        "id, name, status, restic_host, nkey, xkey, created_at, created_by, enrolled_at, revoked_at, last_seen_at, status_changed_at, agent_version, restic_version, os, arch, hostname, uptime_secs, vitals_json, config_version, applied_config_version"
    };
}

/// The columns of a `host_summary` row.
macro_rules! host_summary_columns {
    () => {
        "host_id, last_job_id, last_job_kind, last_job_status, last_job_finished_at, last_backup_status, last_backup_at, last_backup_success_at, last_snapshot_id, running_jobs, queued_jobs, failed_jobs_total"
    };
}

/// Every table with its column list, for the test that checks them.
pub const ALL: &[(&str, &str)] = &[
    ("snapshots", snapshot_columns!()),
    ("repo_health", health_columns!()),
    ("jobs", job_columns!()),
    ("job_logs", log_line_columns!()),
    ("alerts", alert_columns!()),
    ("notification_channels", channel_columns!()),
    ("mute_windows", mute_window_columns!()),
    ("maintenance_windows", maintenance_window_columns!()),
    ("audit_log", audit_entry_columns!()),
    ("rejected_results", rejected_columns!()),
    ("controlplane_backups", cp_backup_run_columns!()),
    ("recovery_kit_exports", kit_export_columns!()),
    ("delivery_outbox", delivery_columns!()),
    ("delivery_log", delivery_log_columns!()),
    ("repositories", repo_columns!()),
    ("host_repositories", host_repo_columns!()),
    ("schedules", schedule_columns!()),
    ("login_throttle", throttle_columns!()),
    ("hosts", host_columns!()),
    ("host_summary", host_summary_columns!()),
];
